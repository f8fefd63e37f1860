"""The driver's status table: one row per trial with its state and latest metrics.

Tune's hooks (study/status_callback.py hands them here) only update rows in memory
and return: Tune runs every callback inside its event loop, so any I/O there stalls
every trial's scheduling. A background thread writes the rows as one small Parquet
file (`status.parquet`, resultstore/store.py), coalesced: at most one write per
WRITE_EVERY_S however many trials end, at least one per HEARTBEAT_S while the study
runs, and once more, marked final, when the driver ends. The thread also reads the
status files of trials that ended (how they ended: completed, diverged, stopped),
which is storage I/O too. `vaestudy status`, resume planning and the analysis read
that one file instead of one status file per trial; each trial's own status file
stays the source of truth, and a table older than the store's STALE_TABLE_S without
the final mark (a killed driver) sends readers back to those files.
"""
from __future__ import annotations

import sys
import threading
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
    """The table's rows, changed by Tune's hooks (cheap, under a lock) and written by a
    background thread (`start`) or directly (`write`, when nothing else writes)."""

    def __init__(self, store: ResultStore, rows: dict[str, dict], configs: dict[str, dict],
                 meta: dict, packs: dict[str, list[str]] | None = None,
                 every_s: float = WRITE_EVERY_S):
        """rows: the plan's view of every trial so far; configs: id -> config of trials to run;
        packs: pack id -> its members' trial ids (a pack is one Tune trial)."""
        self.store, self.rows, self.configs, self.meta = store, rows, configs, meta
        self.packs = packs or {}
        self.every_s = every_s
        self.written = 0.0
        self.dirty = True
        self.ended: list[str] = []          # trials whose status files the writer reads next
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.writes = 0

    # ---- Tune's hooks: memory only ----------------------------------------------------
    def trial_started(self, trial) -> None:
        now = time.time()
        with self.lock:
            for row in self._rows(trial):
                row.update(state="running", started=now, updated=now, error=None,
                           attempts=(row.get("attempts") or 0) + 1)
            self.dirty = True

    def trial_result(self, trial, result: dict) -> None:
        """A trial's metrics; a pack reports no member's, so its rows only stay alive."""
        now = time.time()
        with self.lock:
            rows = self._rows(trial)
            for row in rows:
                if len(rows) == 1:
                    row.update({k: result[k] for k in METRIC_KEYS if result.get(k) is not None})
                if row.get("state") not in FINISHED:
                    row.update(state="running", updated=now,
                               seconds=now - (row.get("started") or now))
            self.dirty = True

    def trial_ended(self, trial) -> None:
        """How each trial ended is in its status file: the writer reads it."""
        now = time.time()
        with self.lock:
            for row in self._rows(trial):
                row.update(updated=now, seconds=now - (row.get("started") or now))
                self.ended.append(row["trial_id"])
            self.dirty = True

    def trial_failed(self, trial, error: str, retrying: bool) -> None:
        """Tune's error text, shown at once (a retried trial keeps running with it)."""
        with self.lock:
            for row in self._rows(trial):
                row.update(state="running" if retrying else "failed", updated=time.time(),
                           error=error[-2000:])
            self.dirty = True

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

    def start(self) -> None:
        """The background writer, until `write(final=True)`."""
        self.thread = threading.Thread(target=self._loop, name="vaestudy-status", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            if self.dirty or time.time() - self.written > HEARTBEAT_S:
                try:
                    self._flush(final=False)
                except Exception as e:                   # noqa: BLE001 (storage may blip)
                    # a failed table write must not end the study: the next one retries,
                    # and readers fall back to the status files meanwhile
                    print(f"vaestudy: status table not written: {e}", file=sys.stderr)

    def _flush(self, final: bool) -> None:
        with self.lock:
            ended, self.ended = self.ended, []
            self.dirty = False
        try:
            got = self.store.status_many(ended) if ended else {}
        except Exception:
            with self.lock:                              # read again by the next write
                self.ended[:0], self.dirty = ended, True
            raise
        with self.lock:
            for tid, st in got.items():
                self.rows[tid].update({k: v for k, v in status_row(st).items()
                                       if v is not None and k not in ("seconds", "attempts")})
            rows = [dict(r) for r in self.rows.values()]
        self.store.write_status_table(rows, final=final, **self.meta)
        self.written = time.time()
        self.writes += 1

    def write(self, final: bool) -> None:
        """Write now, in this thread; `final` also stops the background writer first."""
        if final and self.thread is not None:
            self.stop.set()
            self.thread.join()
            self.thread = None
        self._flush(final)

    def add(self, configs: dict[str, dict], packs: dict[str, list[str]]) -> None:
        """Trials planned while the study runs (a round of adaptive seeds): their rows, configs
        and packs, pending until Tune's hooks report them."""
        with self.lock:
            self.configs.update(configs)
            self.rows.update({tid: config_row(tid, cfg) for tid, cfg in configs.items()})
            self.packs.update(packs)
            self.dirty = True

    def record_errors(self, errors: dict[str, str]) -> None:
        """Trials Tune gave up on: failed, unless their status file says they ended."""
        with self.lock:                                  # the writer may still be copying rows
            for tid, error in errors.items():
                row = self.rows.setdefault(tid, config_row(tid, self.configs.get(tid, {})))
                if row.get("state") not in FINISHED + ("stopped",):
                    row.update(state="failed", error=error)
            self.dirty = True


def as_callback(tracker: StatusTracker):
    """The tracker's Tune `Callback`, its writer started; ray.tune is imported only when
    Tune runs, so a resume with nothing to run stays a few seconds."""
    from study.status_callback import StatusCallback

    tracker.start()
    return StatusCallback(tracker)
