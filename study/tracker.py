"""The driver's status table: one row per trial with its state and latest metrics.

A Tune `Callback` on the driver keeps the rows in memory and writes them as one
small Parquet file (`status.parquet`, trainables/store.py) at most every
WRITE_EVERY_S seconds while results arrive, at least every HEARTBEAT_S while
the study runs, and once more, marked final, when the driver ends. `vaestudy
status`, resume planning and the analysis read that one file instead of one
status file per trial; each trial's own status file stays the source of truth,
and a table older than the store's STALE_TABLE_S without the final mark (a
killed driver) sends readers back to those files.
"""
from __future__ import annotations

import time

from resultstore.format import FINISHED, STATUS_SCHEMA, status_row
from resultstore.store import ResultStore

WRITE_EVERY_S = 5.0
HEARTBEAT_S = 30.0
METRIC_KEYS = [k for k in STATUS_SCHEMA.names
               if k in ("epoch", "sigma2", "evlb", "recon_mse", "mi_xz", "kl_qz_pz",
                        "n_used_factors")]


def trial_key(config: dict) -> str:
    """The id of a Tune trial: the grid hands trial ids, a searcher {"id", "config"}, a pack
    {"id", "members"} (the pack's id)."""
    t = config["trial"]
    return t if isinstance(t, str) else t["id"]


def config_row(trial_id: str, cfg: dict) -> dict:
    """Table columns taken from a trial config dict (nested sections)."""
    noise, train = cfg.get("noise", {}), cfg.get("train", {})
    return {"trial_id": trial_id, "state": "pending", "epochs": train.get("epochs"),
            "noise": noise.get("kind"), "beta": noise.get("beta"), "sigma2": noise.get("sigma2"),
            "seed": train.get("seed"), "latent_dim": cfg.get("model", {}).get("latent_dim")}


class StatusTracker:
    """Tune's callback hooks (see `as_callback`) around the table's rows."""

    def __init__(self, store: ResultStore, rows: dict[str, dict], configs: dict[str, dict],
                 meta: dict, packs: dict[str, list[str]] | None = None):
        """rows: the plan's view of every trial so far; configs: id -> config of trials to run;
        packs: pack id -> its members' trial ids (a pack is one Tune trial)."""
        self.store, self.rows, self.configs, self.meta = store, rows, configs, meta
        self.packs = packs or {}
        self.written = 0.0
        self.dirty = True

    # ---- Tune's hooks ------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        for row in self._rows(trial):
            row.update(state="running", started=time.time(), updated=time.time(), error=None,
                       attempts=(row.get("attempts") or 0) + 1)
        self._changed()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """A trial's metrics; a pack reports no member's, so its rows only stay alive."""
        rows, now = self._rows(trial), time.time()
        for row in rows:
            if len(rows) == 1:
                row.update({k: result[k] for k in METRIC_KEYS if result.get(k) is not None})
            if row.get("state") not in FINISHED:
                row.update(state="running", updated=now,
                           seconds=now - (row.get("started") or now))
        self._changed()

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Each trial's status file says how it ended (completed, diverged, stopped)."""
        rows = self._rows(trial)
        got = self.store.status_many([r["trial_id"] for r in rows])
        now = time.time()
        for row in rows:
            st = got.get(row["trial_id"])
            if st is not None:
                row.update({k: v for k, v in status_row(st).items()
                            if v is not None and k not in ("seconds", "attempts")})
            row.update(updated=now, seconds=now - (row.get("started") or now))
        self._changed(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        for row in self._rows(trial):
            row.update(state="failed", updated=time.time(),
                       error=str(getattr(trial, "error_msg", "") or "")[-2000:] or "trial error")
        self._changed(force=True)

    def on_step_end(self, iteration, trials, **info):
        if self.dirty or time.time() - self.written > HEARTBEAT_S:
            self._changed()

    # ---- the table -------------------------------------------------------------------
    def _rows(self, trial) -> list[dict]:
        """The rows a Tune trial stands for: its own, or its pack's members'."""
        key = trial_key(trial.config)
        out = []
        for tid in self.packs.get(key, [key]):
            if tid not in self.rows:
                cfg = self.configs.get(tid) or trial.config["trial"].get("config", {})
                self.rows[tid] = config_row(tid, cfg)
            out.append(self.rows[tid])
        return out

    def _changed(self, force: bool = False) -> None:
        self.dirty = True
        if force or time.time() - self.written >= WRITE_EVERY_S:
            self.write(final=False)

    def write(self, final: bool) -> None:
        self.store.write_status_table(list(self.rows.values()), final=final, **self.meta)
        self.written, self.dirty = time.time(), False

    def record_errors(self, errors: dict[str, str]) -> None:
        """Trials Tune gave up on: failed, unless their status file says they ended."""
        for tid, error in errors.items():
            row = self.rows.setdefault(tid, config_row(tid, self.configs.get(tid, {})))
            if row.get("state") not in FINISHED + ("stopped",):
                row.update(state="failed", error=error)


def as_callback(tracker: StatusTracker):
    """The tracker as a Tune `Callback`; ray.tune is imported only when Tune runs, so a
    resume with nothing to run stays a few seconds."""
    from ray.tune import Callback

    tracker.__class__ = type("StatusCallback", (StatusTracker, Callback), {})
    return tracker
