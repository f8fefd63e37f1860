"""Which figures a study can have, drawn from the report's tables.

`FIGURES` names every figure with its caption and the data it needs; `draw`
returns a matplotlib Figure, or None with a note when the study lacks the data
(a figure is skipped, never drawn empty). `draw_all` saves each through the one
save helper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl
from matplotlib.figure import Figure
from tqdm import tqdm

from analysis import plots


@dataclass
class Tables:
    """What the figures draw from: Polars frames by name, traversal PNGs by trial id."""
    frames: dict[str, pl.DataFrame]
    traversals: dict[str, bytes] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)       # config/series key -> label
    chosen: dict[str, str | None] = field(default_factory=dict)  # "fig2"/"fig16" -> trial
    pulses: dict[str, bytes] = field(default_factory=dict)     # their own traversals

    def get(self, name: str) -> pl.DataFrame:
        return self.frames.get(name, pl.DataFrame())


@dataclass(frozen=True)
class Spec:
    caption: str
    draw: Callable[[Tables], "Figure | str"]               # a Figure, or why not


def _vs_equivalent(y: str, ylabel: str) -> Callable[[Tables], "Figure | str"]:
    def draw(t: Tables):
        table = t.get("intrinsic_dimension")
        if not table.height or table["equivalent_sigma2"].drop_nulls().len() == 0:
            return "no evaluated trial with an equivalent variance"
        if table[f"{y}_mean"].drop_nulls().drop_nans().len() == 0:
            return f"no trial has {y} (results written before format 4 lack it)"
        fig, ax = plots.new()
        plots.plot_vs_equivalent(t.get("per_trial"), table, ax, y, ylabel, t.labels)
        return fig
    return draw


def _used_vs_p(t: Tables):
    table = t.get("intrinsic_dimension")
    if not table.height:
        return "no evaluated trial yet"
    fig, ax = plots.new()
    plots.plot_used_vs_p(t.get("per_trial"), table, ax, t.labels)
    return fig


def _pulses(figure: str):
    def draw(t: Tables):
        tid = t.chosen.get(figure)
        f = t.get("factors")
        f = f.filter(pl.col("trial_id") == tid) if f.height and tid else pl.DataFrame()
        if not f.height:
            return "no counted trial of this noise kind with per-factor rows"
        png = t.pulses.get(tid)
        fig = Figure(figsize=(12.0 if png else 7.0, 4.5))
        grid = fig.add_gridspec(2, 2 if png else 1, width_ratios=[1, 1] if png else None,
                                hspace=0.05)
        top = fig.add_subplot(grid[0, 0])
        bottom = fig.add_subplot(grid[1, 0], sharex=top)
        plots.plot_factor_pulses(f, top, bottom)
        top.set_title(f"trial {tid}: {t.labels.get(_key_of(t, tid), '')}", fontsize=9)
        if png:
            plots.plot_traversal(png, fig.add_subplot(grid[:, 1]), "its traversal")
        return fig
    return draw


def _key_of(t: Tables, trial_id: str) -> str:
    rows = t.get("per_trial")
    hit = rows.filter(pl.col("trial_id") == trial_id) if rows.height else rows
    return hit["config_key"][0] if hit.height else ""


def _learned(y: str, ylabel: str, log: bool):
    def draw(t: Tables):
        rows = t.get("per_trial")
        rows = rows.filter(pl.col("noise") == "learned") if rows.height else rows
        if not rows.height:
            return "no noise-learning trial"
        fig, ax = plots.new()
        plots.plot_learned(rows, ax, y, ylabel, log, t.labels)
        return fig
    return draw


def _equivalence(t: Tables):
    pairs = t.get("seed_pairs")
    pairs = pairs.drop_nulls(["procrustes_r2", "permutation_r2"]) if pairs.height else pairs
    if not pairs.height:
        return "no pair of seeds of one configuration with used factors and codes"
    fig, ax = plots.new((5.0, 5.0))
    plots.plot_equivalence(pairs, ax)
    return fig


def _higgins(t: Tables):
    table = t.get("higgins")
    if "higgins" not in t.frames:
        return "not computed for this report (higgins=False)"
    if not table.height:
        return "no intrinsic-data trial with a checkpoint (the metric re-encodes generated pairs)"
    fig, ax = plots.new((max(6.0, 0.6 * table["config_key"].n_unique() + 2), 4.5))
    order = t.get("intrinsic_dimension")["config_key"].to_list() if t.get("intrinsic_dimension").height else None
    plots.plot_higgins(table, t.labels, ax, order)
    return fig


def _tradeoff(t: Tables):
    frame = t.get("tradeoff")
    frame = frame.drop_nulls(["evlb", "kl_qz_pz"]) if frame.height else frame
    if not frame.height:
        return "no evaluated trial yet"
    fig, ax = plots.new((6.5, 4.5))
    plots.plot_tradeoff(frame, ax)
    return fig


def _traversals(t: Tables):
    picks = [(tid, png) for tid, png in t.traversals.items() if png]
    if not picks:
        return "no traversal montage stored"
    fig = Figure(figsize=(12.0, 4.5 * len(picks)))          # one row each: factors stay legible
    for ax, (tid, png) in zip(fig.subplots(len(picks), 1, squeeze=False)[:, 0], picks):
        plots.plot_traversal(png, ax, f"{tid}: {t.labels.get(_key_of(t, tid), '')}")
    return fig


def _curves(t: Tables):
    curves = t.get("curves")
    if not curves.height or curves["epoch"].n_unique() < 2:
        return "fewer than two evaluated epochs"
    fig = Figure(figsize=(7.0, 7.0))
    plots.plot_curves(curves, fig.subplots(3, 1, sharex=True), t.labels)
    return fig


def search_objectives(front: pl.DataFrame) -> list[str]:
    """The search's objectives: the columns `write_pareto` puts after `epoch`."""
    cols = front.columns
    return cols[cols.index("epoch") + 1:] if "epoch" in cols else \
        [c for c in cols if c in ("evlb", "kl_qz_pz", "recon_mse", "used_distance")]


def _search_front(t: Tables):
    front = t.get("search_front")
    if not front.height or not {"evlb", "kl_qz_pz"} <= set(front.columns):
        return "no Optuna search front with evlb and kl_qz_pz"
    fig, ax = plots.new((6.5, 4.5))
    others = [c for c in search_objectives(front) if c not in ("evlb", "kl_qz_pz")]
    ax.scatter(*plots._np(front, "kl_qz_pz", "evlb"), color="C3", edgecolor="k", zorder=3)
    ax.set_xlabel("kl_qz_pz (Def. 4, the paper's bound) [nats]")
    ax.set_ylabel("EVLB [nats]")
    ax.set_title("the search's front on all its objectives, projected on two"
                 + (f" (also: {', '.join(others)})" if others else ""), fontsize=8)
    ax.grid(alpha=0.3)
    return fig


FIGURES: dict[str, Spec] = {
    "fig2_factor_pulses": Spec("Fig. 2: per-factor MI (up) and mean posterior variance (down) "
                               "of the learned-noise trial closest to beta = 10, equivalent "
                               "variance 0.112, beside its own traversal", _pulses("fig2")),
    "fig16_factor_pulses": Spec("Fig. 16: the same for the specified-noise trial closest to "
                                "sigma2 = 0.11", _pulses("fig16")),
    "fig4_evlb": Spec("Fig. 4: EVLB against the equivalent variance; learned noise joined by "
                      "beta, beta = 1 ringed",
                      _vs_equivalent("evlb", "EVLB [nats per test point]")),
    "fig5a_kl_qz_pz": Spec("Fig. 5a: kl_qz_pz (Def. 4, the paper's bound KL(q*||p) of "
                           "KL(q(z)||p(z))) against the equivalent variance",
                           _vs_equivalent("kl_qz_pz", "kl_qz_pz [nats]")),
    "fig5b_normal_variance": Spec(
        "Fig. 5b: normal-variance factors against the equivalent variance",
        _vs_equivalent("n_normal", "factors with mean $\\sigma_z^2$ ≈ 1")),
    "fig6a_mi_xz": Spec("Fig. 6a: mi_xz (Def. 2, the paper's upper bound of I(x;z)) against "
                        "the equivalent variance", _vs_equivalent("mi_xz", "mi_xz [nats]")),
    "est_mi_xz": Spec("Beyond the bounds: a Monte-Carlo lower bound of I(x;z) (at most log 1000 "
                      "≈ 6.9 nats) against the equivalent variance",
                      _vs_equivalent("mi_xz_est", "I(x;z) lower bound [nats]")),
    "est_tc": Spec("Beyond the bounds: the total correlation estimate (dependent factors; "
                   "absent where the I(x;z) bound nears its cap)",
                   _vs_equivalent("tc_est", "total correlation estimate [nats]")),
    "fig6b_used": Spec("Fig. 6b: influential (used) factors against the equivalent variance",
                       _vs_equivalent("n_used", "used factors (mi_h > 0.5 nats)")),
    "used_vs_p": Spec("Theorem 1: used factors against the equivalent variance, seed range as a "
                      "band, each series' true P as a line", _used_vs_p),
    "fig8_learned_sigma2": Spec("Fig. 8: learned sigma2 against beta (linear axes as in the "
                                "paper)", _learned("sigma2", r"learned $\sigma^2$", False)),
    "fig9_beta_sigma2": Spec("Fig. 9: beta * learned sigma2 against beta",
                             _learned("equivalent_sigma2", r"$\beta\,\sigma^2_{learnt}$", False)),
    "equivalence": Spec("Theorems 4-5: held-out agreement of seeds up to a rotation "
                        "(Procrustes) vs up to a signed permutation", _equivalence),
    "higgins": Spec("App. C: the Higgins et al. metric across seeds and under random rotations",
                    _higgins),
    "tradeoff": Spec("Reconstruction vs disentanglement (EVLB, kl_qz_pz), the 2-D Pareto front "
                     "marked", _tradeoff),
    "search_front": Spec("The Optuna search's own Pareto front (all its objectives)",
                         _search_front),
    "learning_curves": Spec("Learning curves of the counted trials", _curves),
    "traversals": Spec("Fig. 12-16: latent traversals of selected trials", _traversals),
}


@dataclass
class Drawn:
    name: str
    caption: str
    png: bytes | None = None
    note: str | None = None                                    # why it was skipped
    svg: bytes | None = None


def draw(name: str, tables: Tables):
    """The Figure, or a string saying why the study has no data for it."""
    return FIGURES[name].draw(tables)


def draw_all(tables: Tables, out_dir: Path | None = None, progress: bool = False,
             svg: bool = True) -> list[Drawn]:
    """Every figure: its PNG and SVG bytes (and PNG file in out_dir), or the note of why it
    was skipped."""
    out = []
    for name, spec in tqdm(FIGURES.items(), desc="figures", disable=not progress):
        fig = draw(name, tables)
        if isinstance(fig, str):
            out.append(Drawn(name, spec.caption, note=fig))
            continue
        path = None if out_dir is None else Path(out_dir) / f"{name}.png"
        out.append(Drawn(name, spec.caption, png=plots.save(fig, path),
                         svg=plots.save(fig, fmt="svg") if svg else None))
    return out
