"""The paper's figures as `plot_x(frame, ax, ...) -> Axes` on Polars frames.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`, no pyplot),
so importing this module never switches the backend (Jupyter's inline plots keep working).

Each function draws on the axes it is given and labels them with units; it
never decides whether its data exist (figures.py does, and skips the figure).
The x-axis of Fig. 4-6 is the equivalent variance beta * sigma2 (Sec. 7.2.1),
log-scaled as in the paper; specified noise is a line across its sweep, every
learned (or MoG) model a marker at beta * sigma2_learnt.
"""
from __future__ import annotations

import io

import matplotlib.image as mpimg
import numpy as np
import polars as pl
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

DPI = 150
XLABEL = r"equivalent variance $\beta\,\sigma^2$ (pixels in [0, 1])"
PAPER_FIG8 = {0.5: 0.0017, 1.0: 0.0025, 10.0: 0.011}    # Sec. 8: learned sigma2 on MNIST
STYLE = {"specified": dict(marker="o", color="C0"), "learned": dict(marker="^", color="C1"),
         "mog": dict(marker="s", color="C2")}


def save(fig: Figure, path=None, fmt: str = "png") -> bytes:
    """The one save helper: PNG at 150 dpi (or SVG), written to `path` when given."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, bbox_inches="tight")
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def new(figsize=(6.0, 4.0)):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def log_x(ax: Axes) -> None:
    """Log x-axis labelled at 1, 2, 5 x 10^k in plain numbers (no crowded minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())


def _np(frame: pl.DataFrame, *cols: str) -> list[np.ndarray]:
    return [frame[c].cast(pl.Float64).to_numpy() for c in cols]


SWEEP_COLORS = ("C0", "C4", "C5", "C6", "C7", "C8", "C9")     # C1, C2 mark learned and MoG


def spec_groups(table: pl.DataFrame, labels: dict[str, str] | None = None
                ) -> list[tuple[pl.DataFrame, str, str]]:
    """(rows, colour, label) per specified-noise series: every setting but the equivalent
    variance and the seed (`series_key`), labelled by the settings in which series differ."""
    spec = table.filter(pl.col("noise") == "specified")
    groups = spec.partition_by("series_key", maintain_order=True)
    out = []
    for i, g in enumerate(groups):
        key = g["series_key"][0]
        label = ("specified noise (mean ± 95% CI over seeds)" if len(groups) == 1 else
                 f"specified, {(labels or {}).get(key, key)}")
        out.append((g.sort("equivalent_sigma2"), SWEEP_COLORS[i % len(SWEEP_COLORS)], label))
    return out


def _learned_line(rows: pl.DataFrame, ax: Axes, y: str) -> None:
    """Fig. 4: learned-noise trials joined in beta order per series, beta = 1 ringed."""
    pts = rows.filter(pl.col("noise") == "learned")
    for g in pts.partition_by("series_key", maintain_order=True):
        mean = g.group_by("beta").agg(pl.col("equivalent_sigma2", y).mean()).sort("beta")
        ax.plot(*_np(mean, "equivalent_sigma2", y), color="C1", lw=1, ls="-", zorder=2)
    one = pts.filter(pl.col("beta") == 1.0)
    if one.height:
        ax.scatter(*_np(one, "equivalent_sigma2", y), s=140, facecolor="none", edgecolor="C3",
                   lw=1.5, zorder=4, label=r"learned noise, $\beta = 1$")


def plot_vs_equivalent(rows: pl.DataFrame, table: pl.DataFrame, ax: Axes, y: str,
                       ylabel: str, labels: dict[str, str] | None = None) -> Axes:
    """Fig. 4-6: metric `y` against beta * sigma2; each specified series as a line with
    95% t-intervals, each learned/MoG trial as a marker (learned ones joined by beta).
    `table` is the intrinsic-dimension table (`{y}_mean`, `{y}_half` per configuration),
    `rows` one row per trial."""
    for g, color, label in spec_groups(table, labels):
        x, m, h = _np(g, "equivalent_sigma2", f"{y}_mean", f"{y}_half")
        ax.errorbar(x, m, yerr=np.nan_to_num(h), capsize=2, lw=1.2, ms=4, marker="o",
                    color=color, label=label)
    if y == "evlb":
        _learned_line(rows, ax, y)
    for kind in ("learned", "mog"):
        pts = rows.filter(pl.col("noise") == kind)
        if pts.height:
            x, v = _np(pts, "equivalent_sigma2", y)
            ax.scatter(x, v, s=36, zorder=3, label=f"{kind} noise (one per trial)",
                       edgecolor="k", lw=0.5, **STYLE[kind])
    log_x(ax)
    if y.startswith("n_"):                                            # a count of factors
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylim(bottom=min(-0.3, ax.get_ylim()[0]), top=max(1.3, ax.get_ylim()[1]))
    ax.set_xlabel(XLABEL)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_used_vs_p(rows: pl.DataFrame, table: pl.DataFrame, ax: Axes,
                   labels: dict[str, str] | None = None) -> Axes:
    """Theorem 1: used-factor count against beta * sigma2, seed spread (min-max) as a band,
    each series' true P as a dashed line in its colour."""
    plot_vs_equivalent(rows, table, ax, "n_used", "used factors (mi_h > 0.5 nats)", labels)
    for i, (g, color, _) in enumerate(spec_groups(table, labels)):
        x, lo, hi = _np(g, "equivalent_sigma2", "n_used_min", "n_used_max")
        ax.fill_between(x, lo, hi, alpha=0.18, color=color, lw=0,
                        label="seed range (min-max)" if i == 0 else None)
        P = g["true_factors"].drop_nulls()
        if P.len():
            ax.axhline(int(P[0]), color=color, ls="--", lw=1, label=f"true P = {int(P[0])}")
    if not spec_groups(table) and table["true_factors"].drop_nulls().len():
        P = int(table["true_factors"].drop_nulls()[0])
        ax.axhline(P, color="k", ls="--", lw=1, label=f"true P = {P}")
    ax.legend(fontsize=8)
    return ax


def plot_factor_pulses(factors: pl.DataFrame, top: Axes, bottom: Axes, threshold: float = 0.5):
    """Fig. 2/16: per-factor MI as pulses up (top), mean posterior variance as pulses down."""
    f = factors.sort("factor")
    h, mi, var = _np(f, "factor", "mi", "post_var")
    top.vlines(h, 0, mi, color="C0", lw=2)
    top.axhline(threshold, color="C3", ls=":", lw=1, label=f"used: mi > {threshold:g} nats")
    top.set_ylabel("MI $I(x; z_h)$ [nats]")
    top.legend(fontsize=8, loc="upper right")
    bottom.vlines(h, 0, var, color="C1", lw=2)
    bottom.set_ylim(max(1.1, float(np.nanmax(var)) * 1.05), 0)      # pulses point down
    bottom.set_ylabel(r"mean $\sigma_z^2$")
    bottom.set_xlabel("latent factor h")
    return top, bottom


def plot_learned(rows: pl.DataFrame, ax: Axes, y: str, ylabel: str, log: bool,
                 labels: dict[str, str] | None = None) -> Axes:
    """Fig. 8 (learned sigma2 vs beta) and Fig. 9 (beta * sigma2 vs beta), linear y as in
    the paper; one mean line per series (every setting but beta and the seed)."""
    rows = rows.sort("beta")
    x, v = _np(rows, "beta", y)
    ax.scatter(x, v, s=30, zorder=3, label="one trial", **STYLE["learned"])
    groups = rows.partition_by("series_key", maintain_order=True)
    for i, g in enumerate(groups):
        mean = g.group_by("beta").agg(pl.col(y).mean()).sort("beta")
        name = "mean over seeds" if len(groups) == 1 else \
            f"mean, {(labels or {}).get(g['series_key'][0], '')}"
        ax.plot(*_np(mean, "beta", y), color=f"C{(i + 1) % 10}", lw=1, label=name)
    if y == "sigma2" and (rows["dataset"] == "mnist").any():
        ax.scatter(list(PAPER_FIG8), list(PAPER_FIG8.values()), marker="x", color="k",
                   label="paper, MNIST (Sec. 8)", zorder=4)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(r"$\beta$")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return ax


def plot_equivalence(pairs: pl.DataFrame, ax: Axes, floor: float = -1.0) -> Axes:
    """Theorems 4-5: Procrustes R^2 (rotation) against signed-permutation R^2, one point per
    pair of seeds; points above the diagonal are seeds that agree up to a rotation only.
    R^2 below `floor` (seeds using very different factor counts) is drawn at the floor."""
    x, y = _np(pairs, "permutation_r2", "procrustes_r2")
    low = (x < floor) | (y < floor)
    x, y = np.maximum(x, floor), np.maximum(y, floor)
    kw = dict(s=30, color="C2", edgecolor="k", lw=0.5, zorder=3)
    if "null_procrustes_r2" in pairs.columns:
        nx, ny = (np.maximum(v, floor) for v in _np(pairs, "null_permutation_r2",
                                                    "null_procrustes_r2"))
        ax.scatter(nx, ny, s=20, marker="x", color="0.5", zorder=2,
                   label="null: same pair, points shuffled")
    ax.scatter(x[~low], y[~low], label="pair of seeds (held-out R²)", **kw)
    if low.any():
        ax.scatter(x[low], y[low], marker="v", label=f"R^2 < {floor:g}, drawn at {floor:g}", **kw)
    lo = floor if "null_procrustes_r2" in pairs.columns else float(min(0.0, np.nanmin(np.r_[x, y])))
    ax.plot([lo, 1], [lo, 1], color="k", ls="--", lw=1, label="equal")
    ax.set_xlim(lo - 0.03, 1.03)
    ax.set_ylim(lo - 0.03, 1.03)
    ax.set_xlabel(r"$R^2$ after the best signed permutation")
    ax.set_ylabel(r"$R^2$ after orthogonal Procrustes")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return ax


def plot_higgins(table: pl.DataFrame, labels: dict[str, str], ax: Axes,
                 order: list[str] | None = None) -> Axes:
    """App. C: the Higgins metric per seed (dots) and under random rotations of the same
    latent space (box), per configuration; chance 1/P as a line."""
    keys = [k for k in (order or []) if k in set(table["config_key"])]
    keys += [k for k in dict.fromkeys(table["config_key"].to_list()) if k not in keys]
    for i, key in enumerate(keys):
        g = table.filter(pl.col("config_key") == key)
        rot = [v for r in g["rotated"].to_list() for v in (r or [])]
        if rot:
            ax.boxplot([rot], positions=[i], widths=0.5, showfliers=False)
        ax.scatter(np.full(g.height, i) + 0.12, g["higgins"].to_numpy(), color="C3", s=25,
                   zorder=3)
    known = table["true_factors"].drop_nulls()
    P = int(known[0]) if known.len() else 1
    ax.axhline(1 / P, color="k", ls="--", lw=1)
    handles = [Patch(facecolor="none", edgecolor="k", label="random rotations of the used factors"),
               Line2D([], [], ls="", marker="o", color="C3", label="trained model, one per seed"),
               Line2D([], [], ls="--", color="k", label=f"chance 1/P = {1 / P:.2f}")]
    ax.set_xticks(range(len(keys)), [labels.get(k, k) for k in keys], rotation=30, ha="right",
                  fontsize=7)
    ax.set_xlim(-0.6, len(keys) - 0.4)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("configuration")
    ax.set_ylabel("Higgins et al. metric (held-out accuracy)")
    ax.legend(handles=handles, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=3, frameon=False)
    return ax


def plot_tradeoff(frame: pl.DataFrame, ax: Axes, x: str = "kl_qz_pz", y: str = "evlb") -> Axes:
    """Reconstruction (EVLB, nats) against disentanglement (kl_qz_pz, nats), front marked."""
    xs, ys, used = _np(frame, x, y, "n_used_factors")
    top = max(1.0, float(np.nanmax(used))) if np.isfinite(used).any() else 1.0
    sc = ax.scatter(xs, ys, c=used, cmap="viridis", vmin=0, vmax=top, s=30, edgecolor="k",
                    lw=0.4, zorder=3)
    bar = ax.figure.colorbar(sc, ax=ax, label="used factors")
    bar.locator = ticker.MaxNLocator(integer=True)
    bar.update_ticks()
    front = frame.filter(pl.col("pareto")).sort(x)
    ax.plot(*_np(front, x, y), color="C3", lw=1.5, marker="o", mfc="none", ms=9,
            drawstyle="steps-post", label="Pareto front")
    ax.set_xlabel(r"$KL(q(z)\,\|\,p(z))$ estimate, kl_qz_pz [nats] (lower: closer to prior)")
    ax.set_ylabel("EVLB [nats per test point] (higher: better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_curves(curves: pl.DataFrame, axes, labels: dict[str, str] | None = None,
                 ys=(("evlb", "EVLB [nats]"), ("kl_qz_pz", "kl_qz_pz (bound) [nats]"),
                     ("n_used_factors", "used factors"))):
    """Learning curves: each metric per epoch, one thin line per trial, coloured by series."""
    keys = list(dict.fromkeys(curves["series_key"].to_list()))
    for ax, (y, ylabel) in zip(axes, ys):
        for (tid,), g in curves.group_by("trial_id", maintain_order=True):
            i = keys.index(g["series_key"][0])
            ax.plot(*_np(g.sort("epoch"), "epoch", y), lw=0.8, alpha=0.6,
                    color=f"C{i % 10}")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("epoch")
    if 1 < len(keys) <= 10:
        axes[0].legend(handles=[Line2D([], [], color=f"C{i}", label=(labels or {}).get(k, k))
                                for i, k in enumerate(keys)], fontsize=7, loc="upper right")
    return axes


def plot_traversal(png: bytes, ax: Axes, title: str) -> Axes:
    """Fig. 12-16: one trial's traversal montage (a block per factor, a row per seed image)."""
    img = mpimg.imread(io.BytesIO(png), format="png")
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("latent value -3 ... 3")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
