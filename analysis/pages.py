"""A page per counted trial, linked from the report's tables: its pulses (Fig. 2),
traversal, learning curves and configuration, as pages/<trial_id>.html under ROOT/STUDY."""
from __future__ import annotations

import json

import polars as pl
from matplotlib.figure import Figure
from tqdm import tqdm

from analysis import figures, load, plots, render


def trial_blocks(t: figures.Tables, tid: str, factors: pl.DataFrame, png: bytes | None,
                 row: dict) -> list[tuple]:
    """The page's blocks: headline numbers, pulses beside the traversal, curves, config."""
    curves = t.get("curves").filter(pl.col("trial_id") == tid)
    drawn = []
    if factors.height:
        fig = Figure(figsize=(7.0, 4.5))
        top, bottom = fig.subplots(2, 1, sharex=True)
        plots.plot_factor_pulses(factors, top, bottom)
        drawn.append(figures.Drawn("pulses", "Per-factor MI and mean posterior variance",
                                   png=plots.save(fig)))
    if png:
        drawn.append(figures.Drawn("traversal", "Latent traversal", png=png))
    if curves.height > 1:
        fig = Figure(figsize=(7.0, 6.0))
        plots.plot_curves(curves, fig.subplots(3, 1, sharex=True))
        drawn.append(figures.Drawn("curves", "Learning curves", png=plots.save(fig)))
    keys = ("state", "epoch", "noise", "beta", "sigma2", "equivalent_sigma2", "evlb", "n_used",
            "mi_xz", "mi_xz_est", "kl_qz_pz", "kl_qz_pz_est", "tc_est", "pi_at_floor")
    head = pl.DataFrame([{k: row.get(k) for k in keys}])
    config = json.dumps(json.loads(row["config"]), indent=1, sort_keys=True)
    return ([("h", 1, f"Trial {tid}"), ("p", t.labels.get(row["config_key"], "")),
             ("table", head)] + [("figure", d) for d in drawn]
            + [("h", 2, "Configuration"), ("pre", config)])


def write_trial_pages(root: str, study: str, t: figures.Tables,
                      progress: bool = False) -> dict[str, str]:
    """Write pages/<id>.html for every counted trial; return {trial_id: relative link}."""
    st = load.store(root, study)
    rows = t.get("per_trial")
    ids = rows["trial_id"].to_list() if rows.height else []
    if not ids:
        return {}
    factors = (load.dedupe(load.scan_factors(root, study).join(
        rows.lazy().select("trial_id", "epoch"), on=["trial_id", "epoch"], how="semi"),
        "factors").collect().partition_by("trial_id", as_dict=True))
    links = {}
    for row in tqdm(rows.iter_rows(named=True), total=rows.height, desc="trial pages",
                    disable=not progress):
        tid = row["trial_id"]
        f = factors.get((tid,), pl.DataFrame())
        b = trial_blocks(t, tid, f, load.traversal_png(root, study, tid), row)
        st.write_bytes(st.path("pages", f"{tid}.html"),
                       render.to_html(b, f"{study}: trial {tid}").encode())
        links[tid] = f"pages/{tid}.html"
    return links
