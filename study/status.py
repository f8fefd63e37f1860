"""`vaestudy status`: trial counts by state, failures with their reason, best trials."""
from __future__ import annotations

import polars as pl

from analysis import load
from trainables.store import ResultStore, recorded_trials


def split_study_path(path: str) -> tuple[str, str]:
    """'results/quickstart' or 's3://b/p/quickstart' -> (root, study name)."""
    path = path.rstrip("/")
    if "/" not in path.split("://")[-1]:
        return ".", path
    root, name = path.rsplit("/", 1)
    return root, name


def count_states(store: ResultStore, ids: list[str]) -> dict[str, int]:
    """Trials by state; a trial without a status file is pending."""
    by_id = {s["trial_id"]: s["state"] for s in store.all_status()}
    out = {"completed": 0, "diverged": 0, "failed": 0, "running": 0, "pending": 0}
    for t in ids:
        state = by_id.get(t, "pending")
        out[state] = out.get(state, 0) + 1
    return out


def status_text(store: ResultStore, top: int = 5) -> str:
    meta = store.read_meta() or {}
    states = {s["trial_id"]: s for s in store.all_status()}
    ids = [t["id"] for t in recorded_trials(meta)] or sorted(states)
    counts = {k: v for k, v in count_states(store, ids).items() if v}
    lines = [f"study {store.study} at {store.uri()}: {meta.get('size', f'{len(ids)} trials')}",
             "  " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items()))]
    for t in ids:
        st = states.get(t, {})
        if st.get("state") in ("failed", "diverged"):
            lines.append(f"  {st['state']:>8} {t}: {st.get('error', '')[-300:]}")
    rows = load.trials(store.root, store.study).collect()
    if rows.height:
        cols = ["trial_id", "noise", "beta", "sigma2", "seed", "epoch", "evlb", "recon_mse",
                "kl_qz_pz", "n_used_factors"]
        best = rows.sort("evlb", descending=True, nulls_last=True).head(top).select(cols)
        with pl.Config(tbl_rows=top, tbl_cols=len(cols), tbl_hide_dataframe_shape=True,
                       tbl_hide_column_data_types=True, float_precision=4, tbl_width_chars=140):
            lines.append(f"best {min(top, rows.height)} by EVLB (last evaluated epoch):")
            lines.append(str(best))
    return "\n".join(lines)
