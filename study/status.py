"""`vaestudy status`: trial counts by state, failures with their reason, best trials."""
from __future__ import annotations

import polars as pl

from trainables.store import ResultStore


def split_study_path(path: str) -> tuple[str, str]:
    """'results/quickstart' or 's3://b/p/quickstart' -> (root, study name)."""
    path = path.rstrip("/")
    if "/" not in path.split("://")[-1]:
        return ".", path
    root, name = path.rsplit("/", 1)
    return root, name


def last_rows(store: ResultStore) -> pl.DataFrame | None:
    """Each trial's last evaluated row (each (trial_id, epoch) counted once)."""
    try:
        lf = pl.scan_parquet(store.glob("trials"), hive_partitioning=False)
        return (lf.sort("written_at").unique(["trial_id", "epoch"], keep="last")
                  .sort("epoch").group_by("trial_id").last().collect())
    except (pl.exceptions.ComputeError, FileNotFoundError, OSError):
        return None


def status_text(store: ResultStore, top: int = 5) -> str:
    meta = store.read_json(store.path("study.json")) if store.exists(store.path("study.json")) else {}
    states = {s["trial_id"]: s for s in store.all_status()}
    ids = meta.get("trials") or sorted(states)
    counts: dict[str, int] = {}
    for t in ids:
        st = states.get(t, {}).get("state", "pending")
        counts[st] = counts.get(st, 0) + 1
    lines = [f"study {store.study} at {store.uri()}: {meta.get('size', f'{len(ids)} trials')}",
             "  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))]
    for t in ids:
        st = states.get(t, {})
        if st.get("state") in ("failed", "diverged"):
            lines.append(f"  {st['state']:>8} {t}: {st.get('error', '')[-300:]}")
    rows = last_rows(store)
    if rows is not None and rows.height:
        cols = ["trial_id", "noise", "beta", "sigma2", "seed", "epoch", "evlb", "recon_mse",
                "kl_qz_pz", "n_used_factors"]
        best = rows.sort("evlb", descending=True, nulls_last=True).head(top).select(cols)
        with pl.Config(tbl_rows=top, tbl_cols=len(cols), tbl_hide_dataframe_shape=True,
                       tbl_hide_column_data_types=True, float_precision=4, tbl_width_chars=140):
            lines.append(f"best {min(top, rows.height)} by EVLB (last evaluated epoch):")
            lines.append(str(best))
    return "\n".join(lines)
