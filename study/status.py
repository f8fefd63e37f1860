"""`vaestudy status`: counts by state, running trials and their progress, failures with
their reason, throughput and ETA, the best trials so far.

It reads study.json and the driver's status table (one small file) whatever the
number of trials; where the table is missing or stale (a killed driver, a
`vaestudy train` study) it reads the trials' status files in parallel instead.
"""
from __future__ import annotations

import statistics
import time

import polars as pl

from resultstore.format import FINISHED, recorded_trials
from resultstore.store import ResultStore
from resultstore.uri import split_query

STALE_TRIAL_S = 300.0      # a running trial is flagged when silent for this long (or 5 epochs)
BEST_COLUMNS = ["trial_id", "noise", "beta", "sigma2", "seed", "epoch", "evlb", "recon_mse",
                "kl_qz_pz", "n_used_factors"]


def split_study_path(path: str) -> tuple[str, str]:
    """'results/quickstart' or 's3://b/p/quickstart?endpoint_override=h:9000' -> (root with
    the query, study name)."""
    path, query = split_query(path)
    path = path.rstrip("/")
    if "/" not in path.split("://")[-1]:
        return ".", path
    root, name = path.rsplit("/", 1)
    return root + query, name


def count_states(rows: dict[str, dict], ids: list[str]) -> dict[str, int]:
    """Trials by state; a trial without a row (no status yet) is pending."""
    out = {"completed": 0, "diverged": 0, "failed": 0, "running": 0, "pending": 0}
    for t in ids:
        state = rows.get(t, {}).get("state") or "pending"
        out[state] = out.get(state, 0) + 1
    return out


def status_text(store: ResultStore, top: int = 5, now: float | None = None) -> str:
    now = now or time.time()
    meta = store.read_meta() or {}
    recorded = [t["id"] for t in recorded_trials(meta)]
    rows, info = store.trial_states(recorded or None)
    ids = recorded or sorted(rows)
    counts = {k: v for k, v in count_states(rows, ids).items() if v}
    where = (f"status table written {_ago(now - info['written_at'])}" if info else
             "status files (no current status table)")
    lines = [f"study {store.study} at {store.uri()}: {meta.get('size', f'{len(ids)} trials')}",
             f"  read from {where}",
             "  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))]
    if ext := meta.get("extensions"):         # one study, grown by `vaestudy extend`
        lines.append(f"  extended {len(ext)} time{'s' if len(ext) > 1 else ''}, last at "
                     f"{ext[-1]['at']} (+{ext[-1]['trials_added']} trials)")
    if ad := meta.get("adaptive"):           # seeds until decided (study/adaptive.py)
        r = ad["rounds"][-1]
        going = r["configurations"] - r["decided"] - r["at_max"]
        lines.append(f"  seeds until decided: look {len(ad['rounds'])}: {r['decided']} of "
                     f"{r['configurations']} configurations decided, {r['at_max']} undecided at "
                     f"{ad['schedule']['max']} seeds, {going} given more seeds")
    for pid, members in (meta.get("packs") or {}).items():
        by = count_states(rows, members)
        lines.append(f"  pack {pid}: {len(members)} members ("
                     + ", ".join(f"{k} {v}" for k, v in by.items() if v) + "): "
                     + " ".join(members))
    lines += throughput(rows, ids, info or {"started": _epoch_s(meta.get("started"))}, now)
    lines += running_lines(rows, now)
    for t in ids:
        st = rows.get(t, {})
        if st.get("state") in ("failed", "diverged"):
            lines.append(f"  {st['state']:>8} {t}: {(st.get('error') or '')[-300:]}")
    lines += best_lines(rows, top)
    return "\n".join(lines)


def throughput(rows: dict[str, dict], ids: list[str], info: dict, now: float) -> list[str]:
    """Trials finished per hour since this driver started, device-hours so far, and an ETA."""
    started = info.get("started")
    if not started:
        return []
    done = [r for r in rows.values()
            if r.get("state") in FINISHED and (r.get("updated") or 0) >= started]
    live = any(r.get("state") == "running" for r in rows.values())
    end = now if live or not done else max(r["updated"] for r in done)
    hours = max(end - started, 1e-9) / 3600
    rate = len(done) / hours
    gpu, cpu = info.get("gpu") or 0.0, info.get("cpu") or 1.0
    share, unit = (gpu, "GPU") if gpu else (cpu, "CPU-core")
    used = sum(r.get("seconds") or 0.0 for r in rows.values()) / 3600 * share
    left = sum(1 for t in ids if rows.get(t, {}).get("state") in (None, "pending", "running"))
    eta = f"ETA {_dur(left / rate * 3600)}" if rate and left else ("done" if not left else "ETA ?")
    return [f"  throughput: {rate:.1f} trials/hour, {used:.2f} {unit}-hours so far; "
            f"{left} to go, {eta}"]


def running_lines(rows: dict[str, dict], now: float) -> list[str]:
    """Each running trial: epoch/epochs and how long ago it last reported; silent ones flagged."""
    running = sorted((r for r in rows.values() if r.get("state") == "running"),
                     key=lambda r: r.get("updated") or 0)
    if not running:
        return []
    periods = [r["seconds"] / r["epoch"] for r in running if r.get("epoch") and r.get("seconds")]
    limit = max(STALE_TRIAL_S, 5 * statistics.median(periods)) if periods else STALE_TRIAL_S
    out = ["  running (epoch/epochs, last report):"]
    for r in running:
        age = now - (r.get("updated") or now)
        flag = ("  STALE (no report for a while: a lost node or a hung trial?)"
                if age > limit else "")
        out.append(f"    {r['trial_id']}  {r.get('epoch') or '?'}/{r.get('epochs') or '?'}  "
                   f"{_ago(age)}{flag}")
    return out


def best_lines(rows: dict[str, dict], top: int) -> list[str]:
    """The best trials by EVLB at their last reported epoch: from the rows, no table scan."""
    scored = [r for r in rows.values() if r.get("evlb") is not None]
    if not scored:
        return []
    frame = pl.DataFrame([{k: r.get(k) for k in BEST_COLUMNS} for r in scored],
                         schema_overrides={"beta": pl.Float64, "sigma2": pl.Float64,
                                           "evlb": pl.Float64, "recon_mse": pl.Float64,
                                           "kl_qz_pz": pl.Float64})
    best = frame.sort("evlb", descending=True, nulls_last=True).head(top)
    with pl.Config(tbl_rows=top, tbl_cols=len(BEST_COLUMNS), tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, float_precision=4, tbl_width_chars=140):
        return [f"best {best.height} by EVLB (last evaluated epoch):", str(best)]


def _epoch_s(started) -> float | None:
    """study.json's start: seconds since the epoch, or an ISO time (provenance.now_iso)."""
    if started is None or isinstance(started, (int, float)):
        return started
    from datetime import datetime

    return datetime.fromisoformat(started).timestamp()


def _ago(seconds: float) -> str:
    return f"{_dur(seconds)} ago"


def _dur(seconds: float) -> str:
    s = max(0.0, seconds)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
