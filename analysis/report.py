"""`vaestudy report DIR/STUDY`: the study's statistics, figures and a self-contained report.

`build_report(root, study, Options(...))` writes into ROOT/STUDY/:
    report.md, report.html         (figures embedded in the HTML as base64 PNG)
    pages/<trial_id>.html          a page per counted trial, linked from the tables
    analysis/<table>.parquet       every table of the report, all columns
    analysis/figures/<name>.png|svg  every figure (PNG at 150 dpi and SVG)
It works on a finished or a still-running study (completed trials count unless
`include_running`). `summary_table` is the short text the CLI prints when a study ends.
"""
from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from tqdm import tqdm

from analysis import (agreement, equivalence, figures, intrinsic, load, render, stats, tradeoff,
                      versions)
from analysis.metrics.section import metrics_frames, metrics_section


@dataclass(frozen=True)
class Options:
    """What `vaestudy report` takes on the command line (see study/cli.py)."""
    threshold: float | None = None         # recount used factors with mi > threshold
    include_running: bool = False          # also running trials, at a common epoch
    trial: str | None = None               # Fig. 2's trial instead of the automatic choice
    higgins: str | None = "fast"           # a setting of analysis.higgins.SETTINGS, or None
    rotations: int = 10                    # App. C: random rotations per trial
    higgins_seeds: int | None = 3          # Higgins on the lowest k seeds per configuration
    workers: int | None = None             # Higgins worker processes (default: CPU count)
    trial_pages: bool = True               # a page per counted trial
    progress: bool = False                 # tqdm progress bars on stderr
    metrics: tuple[str, ...] = ()          # issue 16's disentanglement metrics (analysis.metrics)


def intrinsic_view(table: pl.DataFrame, labels: dict[str, str]) -> pl.DataFrame:
    """The intrinsic-dimension table with short headers for the report (Parquet keeps all);
    means with 95% t-intervals where n >= 3, else the mean and n."""
    c = pl.col
    sigma2 = pl.when(c("noise") == "specified").then(c("sigma2_cfg")).otherwise(c("sigma2_mean"))
    return _labelled(table, labels).select(
        "configuration", "noise", "beta", sigma2.alias("σ² (learnt)"),
        c("equivalent_sigma2").alias("β·σ²"), "n",
        pl.format("{}–{}", c("epoch_min"), c("epoch_max")).alias("epochs"),
        stats.fmt_expr("n_used", "n").alias("used factors"),
        pl.format("{}–{}", c("n_used_min"), c("n_used_max")).alias("used range"),
        stats.fmt_expr("n_normal", "n").alias("normal-var"),
        stats.fmt_expr("mi_xz", "n").alias("mi_xz (bound)"),
        stats.fmt_expr("mi_xz_est", "n").alias("I(x;z) ≥ (lower bound)"),
        stats.fmt_expr("kl_qz_pz", "n").alias("kl_qz_pz (bound)"),
        stats.fmt_expr("kl_qz_pz_est", "n").alias("KL(q(z)‖p(z)) est."),
        stats.fmt_expr("tc_est", "n").alias("TC est."),
        stats.fmt_expr("evlb", "n", 5).alias("EVLB"),
        c("true_factors").alias("P"), c("frac_at_P").alias("at P"))


def state_counts(status: pl.DataFrame, trials: pl.DataFrame) -> pl.DataFrame:
    """Trials by state (stale running trials apart), plus trials with rows but no status."""
    known = status.select("trial_id", "state", "stale")
    extra = trials.join(known, on="trial_id", how="anti").select("trial_id", "state", "stale")
    state = pl.when(pl.col("stale")).then(pl.lit("running (stale)")).otherwise(pl.col("state"))
    return (pl.concat([known, extra]).with_columns(state.alias("state"))
            .group_by("state").agg(pl.len().alias("trials")).sort("state"))


def not_counted(trials: pl.DataFrame, status: pl.DataFrame, counted_ids: list[str],
                labels: dict[str, str]) -> pl.DataFrame:
    """Every trial left out of the aggregates: its state, last epoch and reason."""
    last = trials.select("trial_id", "config_key", pl.col("last_epoch").alias("epoch"))
    out = (status.join(last, on="trial_id", how="left")
           .filter(~pl.col("trial_id").is_in(counted_ids))
           .with_columns(pl.when(pl.col("stale")).then(pl.lit("running (stale: no live driver)"))
                         .otherwise(pl.col("state")).alias("state"))
           .select("trial_id", "config_key", "state", "epoch", "error").sort("state", "trial_id"))
    return _labelled(out, labels)


# Fig. 2: learned noise, beta = 10, equivalent sigma2 0.112; Fig. 16: specified sigma2 = 0.11.
PAPER_PULSES = {"fig2": ("learned", 10.0, 0.112), "fig16": ("specified", 1.0, 0.11)}


def choose_trial(rows: pl.DataFrame, figure: str = "fig2") -> str | None:
    """Fig. 2/16's model: the counted trial of that noise kind closest (in log distance) to
    the paper's beta and equivalent variance; among equally close ones the best EVLB."""
    kind, beta, eq = PAPER_PULSES[figure]
    pick = rows.filter((pl.col("noise") == kind) & (pl.col("equivalent_sigma2") > 0)) \
        if rows.height else rows
    if not pick.height:
        return None
    gap = ((pl.col("beta") / beta).log().abs() + (pl.col("equivalent_sigma2") / eq).log().abs())
    return pick.with_columns(gap=gap).sort("gap", pl.col("evlb").neg(),
                                           nulls_last=True)["trial_id"][0]


def pick_traversals(root: str, study: str, rows: pl.DataFrame, k: int = 3) -> dict[str, bytes]:
    """Montages of up to k trials spread over the equivalent variance (lowest seed each)."""
    first = rows.sort("seed").unique("config_key", keep="first").sort("equivalent_sigma2")
    if first.is_empty():
        return {}
    idx = sorted({round(i * (first.height - 1) / max(k - 1, 1)) for i in range(k)})
    return {tid: png for tid in first["trial_id"].gather(idx).to_list()
            if (png := load.traversal_png(root, study, tid)) is not None}


def labels(rows: pl.DataFrame) -> dict[str, str]:
    """config_key and series_key -> the settings in which they differ from the others."""
    if not rows.height:
        return {}
    by_config = dict(rows.unique("config_key").select("config_key", "config").iter_rows())
    by_series = dict(rows.unique("series_key").select("series_key", "config").iter_rows())
    return {**load.differing_labels(by_config),
            **load.differing_labels(by_series, drop=("noise.sigma2", "noise.beta"))}


def steps(opts: Options, n: int):
    """A tqdm bar over the report's n steps (silent unless opts.progress)."""
    return tqdm(total=n, desc="report", unit="step", disable=not opts.progress, file=sys.stderr)


def compute_tables(root: str, study: str, opts: Options = Options()) -> figures.Tables:
    """Every table of the report (Polars, collected once each) and what the figures need."""
    bar = steps(opts, 5)
    all_rows = load.trials(root, study, last=False).collect()
    last = all_rows.filter(pl.col("epoch") == pl.col("last_epoch"))
    rows_lazy = load.counted(all_rows.lazy(), opts.include_running)
    factors = load.dedupe(load.scan_factors(root, study).join(           # scanned once
        rows_lazy.select("trial_id", "epoch"), on=["trial_id", "epoch"], how="semi"),
        "factors").collect().lazy()
    rows = intrinsic.per_trial(rows_lazy, factors, opts.threshold).collect()
    status = load.status_frame(root, study)
    L = labels(last)
    ids = rows["trial_id"].to_list()
    frames = {"states": state_counts(status, last),
              "not_counted": not_counted(last, status, ids, L),
              "per_trial": rows,
              "curves": all_rows.filter(pl.col("trial_id").is_in(ids)).select(
                  "trial_id", "config_key", "series_key", "epoch", "evlb", "train_loss",
                  "mi_xz", "kl_qz_pz", "n_used_factors", "sigma2").sort("trial_id", "epoch"),
              "intrinsic_dimension": intrinsic.aggregate(rows.lazy()).collect(),
              "learned_noise": intrinsic.learned_noise(rows.lazy()).collect(),
              "tradeoff": tradeoff.tradeoff(rows.lazy()),
              "code_versions": versions.code_versions(last)}
    bar.update()
    codes = equivalence.trial_codes(rows.lazy(), factors, load.codes(root, study))
    frames["seed_pairs"] = equivalence.seed_pairs(codes)
    looked = adaptive_record(root, study)
    frames["seed_agreement"] = with_stops(equivalence.seed_agreement(
        frames["seed_pairs"], {k: v["level"] for k, v in looked.items()}), looked)
    frames["ground_truth"] = equivalence.ground_truth(codes)
    bar.update()
    if opts.higgins:
        h = equivalence.higgins_table(root, study, rows.lazy(), factors, rotations=opts.rotations,
                                      setting=opts.higgins, workers=opts.workers,
                                      progress=opts.progress,
                                      seeds_per_config=opts.higgins_seeds)
        frames["higgins"], frames["higgins_spread"] = h, equivalence.higgins_spread(h)
    frames.update(metrics_frames(root, study, opts.metrics) if opts.metrics else {})  # issue 16
    bar.update()
    chosen = {"fig2": opts.trial or choose_trial(rows, "fig2"), "fig16": choose_trial(rows, "fig16")}
    keep = [t for t in chosen.values() if t]
    frames["factors"] = factors.filter(pl.col("trial_id").is_in(keep)).collect()
    picks = pick_traversals(root, study, rows)
    front = search_front(root, study)
    if front is not None:              # an Optuna search: its own objectives' front
        frames["search_front"] = front
        picks = {tid: png for tid in front["trial_id"].to_list()[:3]
                 if (png := load.traversal_png(root, study, tid)) is not None} or picks
    pulses = {t: load.traversal_png(root, study, t) for t in keep}
    bar.update()
    bar.close()
    return figures.Tables(frames, picks, L, chosen, {k: v for k, v in pulses.items() if v})


def search_front(root: str, study: str) -> pl.DataFrame | None:
    """analysis/pareto.parquet, which an Optuna search writes on its objectives."""
    st = load.store(root, study)
    raw = st.read_optional(st.path("analysis", "pareto.parquet"))
    return None if raw is None else pl.read_parquet(io.BytesIO(raw))


def _labelled(frame: pl.DataFrame, labels: dict[str, str]) -> pl.DataFrame:
    if "config_key" not in frame.columns:
        return frame
    label = pl.col("config_key").replace_strict(labels, default=pl.col("config_key"))
    return frame.with_columns(label.alias("configuration")).select(
        "configuration", pl.exclude("configuration", "config_key"))


def lead(study: str, t: figures.Tables) -> str:
    """The first paragraph: Theorem 1's verdict where P is known, else what the study holds."""
    states = dict(t.get("states").iter_rows())
    said = intrinsic.reached_p(t.get("intrinsic_dimension"))
    counts = ", ".join(f"{n} {s}" for s, n in states.items()) or "no trials yet"
    rows = t.get("per_trial")
    span = (f" Aggregates count {rows.height} trials at epochs {rows['epoch'].min()}–"
            f"{rows['epoch'].max()}." if rows.height else " No trial is counted yet.")
    return (said + " " if said else "") + f"Study {study!r}: {counts}." + span


def _about(spec: dict | None) -> list[tuple]:
    """The study's description and size from study.json (absent for `vaestudy train`)."""
    if not spec:
        return []
    raw = spec.get("spec") if isinstance(spec.get("spec"), dict) else {}
    parts = [str(raw["description"]).rstrip(".") + "."] if raw.get("description") else []
    parts += [f"Size: {spec['size']}."] if spec.get("size") else []
    text = " ".join(parts)
    return [("p", text)] if text else []


def _floor_notes(t: figures.Tables) -> list[tuple]:
    """Where a mixture's components sit on the variance floor, say so."""
    rows = t.get("per_trial")
    stuck = rows.filter(pl.col("pi_at_floor") > 0) if rows.height else rows
    if not stuck.height:
        return []
    worst = stuck.sort("pi_at_floor", descending=True).row(0, named=True)
    return [("p", f"Mixture noise: {stuck.height} trial(s) have components stuck at the variance "
                  f"floor (var_floor), up to pi = {worst['pi_at_floor']:.2f} in trial "
                  f"{worst['trial_id']}; pixels reconstructed exactly (e.g. MNIST's background) "
                  "make that component's precision dominate the equivalent variance.")]


def _overview(study: str, t: figures.Tables, spec: dict | None, opts: Options) -> list[tuple]:
    which = ("completed and running trials, compared at a common epoch" if opts.include_running
             else "completed trials only (running, stopped, failed and stale trials are listed "
                  "below, not averaged)")
    out = [("h", 1, f"Study {study}: analysis report"), ("lead", lead(study, t)), *_about(spec),
           ("h", 2, "Trials by state"), ("table", t.get("states"))]
    if t.get("not_counted").height:
        out += [("p", "Trials not counted, with their last epoch and reason:"),
                ("table", t.get("not_counted"))]
    return out + [
        ("h", 2, "Intrinsic dimension (Theorem 1)"),
        ("p", f"Per configuration across seeds ({which}); n trials and the epoch range of each "
              "row; means ± the 95% t-interval's half width where n ≥ 3, else the mean alone. "
              "Used factors have mi_h > 0.5 nats (App. E). The equivalent variance is "
              "β·σ² (Sec. 7.2.1), with the learned σ² for learned noise and, for a mixture, "
              "β / Σ_k π_k/σ²_k. mi_xz and kl_qz_pz are the paper's bounds (Def. 2: I(x;z) + "
              "KL(q(z)‖q*(z)); Def. 4: KL(q*(z)‖p(z))). Monte Carlo on the aggregate "
              "posterior of 1,000 evaluation points: 'I(x;z) ≥' is a lower bound of I(x;z), "
              "capped at log 1000 ≈ 6.9 nats whatever the true value; the KL(q(z)‖p(z)) and "
              "total-correlation estimates absorb what it misses, so they are left empty "
              "wherever a seed's bound is within 3 nats of that cap (docs/analysis.md, "
              "estimator table)."),
        ("table", intrinsic_view(t.get("intrinsic_dimension"), t.labels)), *_floor_notes(t)]


def adaptive_record(root: str, study: str) -> dict[str, dict]:
    """study.json's per-configuration record of a study whose seeds were added until the
    verdict was decided (study/adaptive.py); {} for any other study."""
    meta = load.study_spec(root, study) or {}
    return (meta.get("adaptive") or {}).get("configs") or {}


def with_stops(table: pl.DataFrame, looked: dict[str, dict]) -> pl.DataFrame:
    """The seed-agreement table with each configuration's planned seeds and why it stopped
    (an adaptive study's record), or unchanged."""
    if not looked:
        return table
    stops = pl.DataFrame([{"config_key": k, "seeds_planned": v["seeds"],
                           "stopped": v["stopped"] or "still adding seeds"}
                          for k, v in looked.items()],
                         schema={"config_key": pl.String, "seeds_planned": pl.Int64,
                                 "stopped": pl.String})
    return table.join(stops, on="config_key", how="left")


def _agreement_view(table: pl.DataFrame, L: dict) -> pl.DataFrame:
    c = pl.col
    diff = pl.struct(m=c("diff_mean"), lo=c("diff_low"), hi=c("diff_high"), n=c("seeds"))
    show = diff.map_elements(lambda r: stats.fmt(r["m"], None if r["lo"] is None else
                                                 (r["hi"] - r["lo"]) / 2, r["n"]),
                             return_dtype=pl.String)
    stops = [c("seeds_planned").alias("seeds planned"), c("stopped").alias("why it stopped"),
             (c("level") * 100).round(2).cast(pl.String).add("%").alias("level")] \
        if "stopped" in table.columns else []
    return _labelled(table, L).select(
        "configuration", "seeds", "pairs", c("procrustes_r2").alias("Procrustes R²"),
        c("permutation_r2").alias("permutation R²"), show.alias("difference"),
        c("verdict").replace("", "— (no verdict)").alias("verdict"), *stops)


_SEQUENTIAL = (
    " This study added seeds until the verdict was decided (`seeds: {adaptive: ...}`): after "
    "each round, an undecided configuration got the next seeds, up to its maximum. Each look "
    "spends a share of the error one fixed look would have (Lan-DeMets spending, "
    "analysis/sequential.py), so each configuration's intervals are at its last look's level "
    "(the `level` column, above 95%) and P(a false verdict at any look) stays within 2.5% per "
    "kind of verdict; the interval where a configuration stopped keeps its 95% coverage. "
    "`seeds planned` counts the seeds it was given, `seeds` those with codes; the rule's "
    "simulated error rates and seeds used are in docs/analysis.md.")


def _equivalence(t: figures.Tables, opts: Options = Options()) -> list[tuple]:
    L = t.labels
    out = [
        ("h", 2, "Factor equivalence (Theorems 4-5)"),
        ("p", "Pairs of seeds of one configuration: their used factors aligned by an orthogonal "
              "Procrustes fit and by the best signed permutation, each fitted on half of the "
              "evaluation points and scored (R²) on the other half; the difference is "
              "Procrustes minus permutation. Means are over the pairs; "
              "intervals are over the seeds (n = seeds), because pairs that share a seed are "
              "not independent: 95%, Student's t on the leave-one-seed-out jackknife's "
              "standard error. Pairs are taken among the first 20 seeds of a configuration. "
              f"Verdict, where the Procrustes R²'s interval lies above 0 (the seeds are "
              f"related): 'rotation' where the difference's interval lies above "
              f"{agreement.MARGIN:g}, 'signed permutation' where it lies below; otherwise no "
              "verdict. Its error rates, measured on simulated codes of known truth, are in "
              "docs/analysis.md (seed agreement); each configuration gets its own verdict at "
              "that rate, with no correction for the number of configurations."
              + (_SEQUENTIAL if "stopped" in t.get("seed_agreement").columns else "")),
        ("table", _agreement_view(t.get("seed_agreement"), L)),
        ("h", 3, "Against the ground-truth factors (held out)"),
        ("table", _labelled(t.get("ground_truth"), L))]
    if "higgins_spread" in t.frames:
        setting = t.get("higgins")["setting"][0] if t.get("higgins").height else ""
        k = f" Scored on the lowest {opts.higgins_seeds} seeds of each configuration." \
            if opts.higgins_seeds else ""
        note = k + ("" if setting == "published" else
                    f" Setting '{setting}': fewer and smaller batches than disentanglement_lib's "
                "(64 pairs, 10,000 train / 5,000 eval samples); these numbers are not comparable "
                "with published scores (`--higgins published` computes those).")
        out += [("h", 3, "Higgins et al. metric (App. C): across seeds and under random rotations"),
                ("p", "Eval accuracy of scikit-learn's LogisticRegression (train accuracy beside "
                      "it). `no_used_factor` counts seeds with no used factor (a collapsed "
                      "model): their score says nothing about disentanglement." + note),
                ("table", _labelled(t.get("higgins_spread"), L))]
    return out


def _tradeoff(t: figures.Tables) -> list[tuple]:
    L, trade = t.labels, t.get("tradeoff")
    view = ["configuration", "trial_id", "seed", "epoch", "equivalent_sigma2", "evlb",
            "recon_mse", "mi_xz", "kl_qz_pz", "n_used_factors"]
    front = _labelled(trade.filter(pl.col("pareto")), L).select(view) if trade.height else trade
    out = [("h", 2, "Trade-off: Pareto-optimal trials (max EVLB, min kl_qz_pz)"),
           ("table", front)]
    if "search_front" in t.frames:
        front = t.get("search_front")
        names = figures.search_objectives(front)
        out += [("h", 3, f"The search's own Pareto front ({', '.join(names)})"),
                ("table", _labelled(front, L))]
    return out + [("h", 2, "Learned noise (Fig. 8-9)"),
                  ("table", _labelled(t.get("learned_noise"), L))]


# Further report sections: functions (t, opts) -> list of blocks, appended after the
# disentanglement metrics (issue 16's `metrics_section`).
SECTIONS: list = [versions.section]       # which code computed the trials (extend, reuse)


def blocks(root: str, study: str, t: figures.Tables, drawn: list,
           opts: Options = Options()) -> list[tuple]:
    """The report's content, in order, for `render.markdown` and `render.to_html`."""
    spec = load.study_spec(root, study)
    text = json.dumps(spec, indent=1, default=str) if spec else \
        "(no study.json: a `vaestudy train` study)"
    extra = [b for section in SECTIONS for b in section(t, opts)]
    return (_overview(study, t, spec, opts) + [("h", 2, "Figures")]
            + [("figure", d) for d in drawn] + _equivalence(t, opts)
            + metrics_section(t.frames.get("metrics"), t.labels) + extra + _tradeoff(t)
            + [("h", 2, "Spec"), ("pre", text)])


def write_tables(st, frames: dict[str, pl.DataFrame]) -> None:
    for name, frame in frames.items():
        if name == "factors":
            continue
        buf = io.BytesIO()
        frame.write_parquet(buf)
        st.write_bytes(st.path("analysis", f"{name}.parquet"), buf.getvalue())


def build_report(root: str, study: str, opts: Options = Options(), **kw) -> Path:
    """Write report.md, report.html, analysis/*.parquet, analysis/figures/*.png|svg and (with
    opts.trial_pages) pages/<id>.html; return the path of report.html (under ROOT/STUDY).
    Keyword arguments override fields of `opts`."""
    from dataclasses import replace

    from analysis import pages
    opts = replace(opts, **kw)
    st = load.store(root, study)
    t = compute_tables(root, study, opts)
    write_tables(st, t.frames)
    drawn = figures.draw_all(t, progress=opts.progress)
    for d in drawn:
        for ext, data in (("png", d.png), ("svg", d.svg)):
            if data:
                st.write_bytes(st.path("analysis", "figures", f"{d.name}.{ext}"), data)
    b = blocks(root, study, t, drawn, opts)
    links = pages.write_trial_pages(root, study, t, opts.progress) if opts.trial_pages else {}
    st.write_bytes(st.path("report.md"), render.markdown(b, "analysis/figures").encode())
    st.write_bytes(st.path("report.html"),
                   render.to_html(b, f"{study}: report", links).encode())
    return Path(st.path("report.html"))


def summary_table(root: str, study: str) -> str:
    """One line per configuration: noise, beta, sigma2 / equivalent variance, n, used factors
    (mean ± 95% t half width where n >= 3), EVLB mean. What `vaestudy run` prints at the end."""
    table = intrinsic.from_study(root, study)
    if table.is_empty():
        return "no completed trial yet"
    head = f"{'noise':<10}{'beta':>7}{'sigma2':>10}{'equiv.var':>11}{'n':>4}{'epochs':>9}" \
           f"  {'used factors':<22}{'evlb':>11}"
    lines = [head]
    for r in table.iter_rows(named=True):
        s2 = r["sigma2_cfg"] if r["noise"] == "specified" else r["sigma2_mean"]   # learnt
        used = stats.fmt(r["n_used_mean"], r["n_used_half"], r["n"])
        lines.append(f"{r['noise']:<10}{r['beta']:>7.3g}{s2:>10.3g}"
                     f"{r['equivalent_sigma2']:>11.3g}{r['n']:>4}"
                     f"{str(r['epoch_min']) + '-' + str(r['epoch_max']):>9}  {used:<22}"
                     f"{r['evlb_mean']:>11.1f}")
    P = table["true_factors"].drop_nulls()
    if P.len():
        lines.append(f"(true intrinsic dimension P = {int(P[0])})")
    return "\n".join(lines)
