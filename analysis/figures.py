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

import matplotlib.pyplot as plt
import polars as pl

from analysis import plots


@dataclass
class Tables:
    """What the figures draw from: Polars frames by name, traversal PNGs by trial id."""
    frames: dict[str, pl.DataFrame]
    traversals: dict[str, bytes] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)       # config_key -> readable label
    chosen: str | None = None                                  # Fig. 2/16's trial

    def get(self, name: str) -> pl.DataFrame:
        return self.frames.get(name, pl.DataFrame())


@dataclass(frozen=True)
class Spec:
    caption: str
    draw: Callable[[Tables], "plt.Figure | str"]               # a Figure, or why not


def _vs_equivalent(y: str, ylabel: str) -> Callable[[Tables], "plt.Figure | str"]:
    def draw(t: Tables):
        table = t.get("intrinsic_dimension")
        if not table.height or table["equivalent_sigma2"].drop_nulls().len() == 0:
            return "no evaluated trial with an equivalent variance"
        fig, ax = plots.new()
        plots.plot_vs_equivalent(t.get("per_trial"), table, ax, y, ylabel)
        return fig
    return draw


def _used_vs_p(t: Tables):
    table = t.get("intrinsic_dimension")
    if not table.height:
        return "no evaluated trial yet"
    fig, ax = plots.new()
    plots.plot_used_vs_p(t.get("per_trial"), table, ax)
    return fig


def _pulses(t: Tables):
    f = t.get("factors")
    f = f.filter(pl.col("trial_id") == t.chosen) if f.height and t.chosen else pl.DataFrame()
    if not f.height:
        return "no per-factor rows for an evaluated trial"
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7.0, 4.5),
                                      gridspec_kw={"hspace": 0.05})
    plots.plot_factor_pulses(f, top, bottom)
    top.set_title(f"trial {t.chosen}: {t.labels.get(_key_of(t, t.chosen), '')}", fontsize=9)
    return fig


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
        plots.plot_learned(rows, ax, y, ylabel, log)
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
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 4.2), squeeze=False)
    for ax, (tid, png) in zip(axes[0], picks):
        plots.plot_traversal(png, ax, f"{tid}\n{t.labels.get(_key_of(t, tid), '')}")
    return fig


FIGURES: dict[str, Spec] = {
    "fig2_factor_pulses": Spec("Fig. 2/16: per-factor MI (up) and mean posterior variance "
                               "(down) of one model", _pulses),
    "fig4_evlb": Spec("Fig. 4: EVLB against the equivalent variance",
                      _vs_equivalent("evlb", "EVLB [nats per test point]")),
    "fig5a_kl_qz_pz": Spec("Fig. 5a: KL(q(z)||p(z)) (Def. 4) against the equivalent variance",
                           _vs_equivalent("kl_qz_pz", "kl_qz_pz [nats]")),
    "fig5b_normal_variance": Spec(
        "Fig. 5b: normal-variance factors against the equivalent variance",
        _vs_equivalent("n_normal", "factors with mean $\\sigma_z^2$ ≈ 1")),
    "fig6a_mi_xz": Spec("Fig. 6a: I(x;z) (Def. 2) against the equivalent variance",
                        _vs_equivalent("mi_xz", "mi_xz [nats]")),
    "fig6b_used": Spec("Fig. 6b: influential (used) factors against the equivalent variance",
                       _vs_equivalent("n_used", "used factors (mi_h > 0.5 nats)")),
    "used_vs_p": Spec("Theorem 1: used factors against the equivalent variance, seed range as a "
                      "band, the data's true P as a line", _used_vs_p),
    "fig8_learned_sigma2": Spec("Fig. 8: learned sigma2 against beta",
                                _learned("sigma2", r"learned $\sigma^2$", True)),
    "fig9_beta_sigma2": Spec("Fig. 9: beta * learned sigma2 against beta",
                             _learned("equivalent_sigma2", r"$\beta\,\sigma^2_{learnt}$", False)),
    "equivalence": Spec("Theorems 4-5: agreement of seeds up to a rotation (Procrustes) vs up "
                        "to a signed permutation", _equivalence),
    "higgins": Spec("App. C: the Higgins et al. metric across seeds and under random rotations",
                    _higgins),
    "tradeoff": Spec("Reconstruction vs disentanglement, Pareto front marked", _tradeoff),
    "traversals": Spec("Fig. 12-16: latent traversals of selected trials", _traversals),
}


@dataclass
class Drawn:
    name: str
    caption: str
    png: bytes | None = None
    note: str | None = None                                    # why it was skipped


def draw(name: str, tables: Tables):
    """The Figure, or a string saying why the study has no data for it."""
    return FIGURES[name].draw(tables)


def draw_all(tables: Tables, out_dir: Path | None = None) -> list[Drawn]:
    """Every figure: its PNG bytes (and file in out_dir), or the note of why it was skipped."""
    out = []
    for name, spec in FIGURES.items():
        fig = draw(name, tables)
        if isinstance(fig, str):
            out.append(Drawn(name, spec.caption, note=fig))
            continue
        path = None if out_dir is None else Path(out_dir) / f"{name}.png"
        out.append(Drawn(name, spec.caption, png=plots.save(fig, path)))
    return out
