"""`vaestudy report DIR/STUDY`: the study's statistics, figures and a self-contained report.

`build_report(root, study)` writes into ROOT/STUDY/:
    report.md, report.html         (figures embedded in the HTML as base64 PNG)
    analysis/<table>.parquet       every table of the report, all columns
    analysis/figures/<name>.png    every figure (150 dpi), linked from report.md
It works on a finished or a still-running study. `summary_table` is the short
text the CLI prints when a study ends.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import polars as pl

from analysis import equivalence, figures, intrinsic, load, render, tradeoff
from analysis.metrics.section import metrics_frames, metrics_section

# The report's Higgins metric: 500 generated batches of 16 pairs per trial (App. C), 10 rotations;
# about 16k encoded images a trial, a few seconds on a CPU.
HIGGINS = {"n_train": 300, "n_test": 200, "batch_size": 16, "rotations": 10}


def intrinsic_view(table: pl.DataFrame) -> pl.DataFrame:
    """The intrinsic-dimension table with short headers for the report (Parquet keeps all)."""
    c = pl.col
    sigma2 = pl.when(c("noise") == "specified").then(c("sigma2_cfg")).otherwise(c("sigma2_mean"))
    return table.select(
        "noise", "beta", sigma2.alias("sigma2 (learnt)"), c("equivalent_sigma2").alias("β·σ²"),
        c("latent_dim").alias("H"), "seeds",
        pl.format("{} ± {}", c("n_used_mean").round(2), c("n_used_std").round(2).fill_null(0))
        .alias("used (mean ± sd)"),
        pl.format("{}–{}", c("n_used_min"), c("n_used_max")).alias("used range"),
        c("n_normal_mean").alias("normal-var"), c("mi_xz_mean").alias("mi_xz"),
        c("kl_qz_pz_mean").alias("kl_qz_pz"), c("evlb_mean").alias("EVLB"),
        c("true_factors").alias("P"), c("frac_at_P").alias("seeds at P"),
        c("mae_P").alias("|used − P|"))


def state_counts(trials: pl.DataFrame, status: pl.DataFrame) -> pl.DataFrame:
    """Trials by state: status files, plus trials with rows but no status file yet."""
    known = status.select("trial_id", "state")
    extra = trials.join(known, on="trial_id", how="anti").select("trial_id", "state")
    return (pl.concat([known, extra]).group_by("state").agg(pl.len().alias("trials"))
            .sort("state"))


def config_labels(rows: pl.DataFrame) -> dict[str, str]:
    """config_key -> 'specified b=1 s2=0.01 H=128' for figures and tables."""
    out = {}
    for r in rows.unique("config_key", keep="first").iter_rows(named=True):
        s2 = "" if r["noise"] != "specified" else f" s2={r['sigma2_cfg']:g}"
        out[r["config_key"]] = f"{r['noise']} b={r['beta']:g}{s2} H={r['latent_dim']}"
    return out


def choose_trial(rows: pl.DataFrame) -> str | None:
    """Fig. 2/16's model: a learned-noise beta = 1 trial as in Fig. 2; else, where the data's
    P is known, the trial whose used-factor count is closest to P; else the best EVLB. Among
    those, one with both used and unused factors, so both kinds of pulse show."""
    if rows.is_empty():
        return None
    pref = rows.filter((pl.col("noise") == "learned") & (pl.col("beta") == 1.0))
    pick = pref if pref.height else rows
    mixed = pick.filter((pl.col("n_used") > 0) & (pl.col("n_used") < pl.col("latent_dim")))
    pick = mixed if mixed.height else pick
    if not pref.height and "true_factors" in pick.columns and \
            pick["true_factors"].is_not_null().any():
        pick = pick.with_columns(gap=(pl.col("n_used") - pl.col("true_factors")).abs())
        return pick.sort("gap", pl.col("evlb").neg(), nulls_last=True)["trial_id"][0]
    return pick.sort("evlb", descending=True, nulls_last=True)["trial_id"][0]


def pick_traversals(root: str, study: str, rows: pl.DataFrame, k: int = 3) -> dict[str, bytes]:
    """Montages of up to k trials spread over the equivalent variance (lowest seed each)."""
    first = rows.sort("seed").unique("config_key", keep="first").sort("equivalent_sigma2")
    if first.is_empty():
        return {}
    idx = sorted({round(i * (first.height - 1) / max(k - 1, 1)) for i in range(k)})
    picks = {}
    for tid in first["trial_id"].gather(idx).to_list():
        if (png := load.traversal_png(root, study, tid)) is not None:
            picks[tid] = png
    return picks


def compute_tables(root: str, study: str, *, higgins: bool = True, threshold: float | None = None,
                   trial: str | None = None, higgins_opts: dict | None = None,
                   metrics: tuple[str, ...] = ()) -> figures.Tables:
    """Every table of the report (Polars, collected once each) and what the figures need."""
    trials = load.trials(root, study).collect()
    factors = load.factors(root, study).collect()
    rows = intrinsic.per_trial(trials.lazy(), factors.lazy(), threshold).collect()
    status = load.status_frame(root, study)
    frames = {"states": state_counts(trials, status),
              "failures": status.filter(pl.col("state").is_in(["failed", "diverged"])),
              "per_trial": rows,
              "intrinsic_dimension": intrinsic.aggregate(rows.lazy()).collect(),
              "learned_noise": intrinsic.learned_noise(rows.lazy()).collect(),
              "tradeoff": tradeoff.tradeoff(trials.lazy())}
    codes = equivalence.trial_codes(trials.lazy(), factors.lazy(), load.codes(root, study))
    frames["seed_pairs"] = equivalence.seed_pairs(codes)
    frames["ground_truth"] = equivalence.ground_truth(codes)
    if higgins:
        h = equivalence.higgins_table(root, study, trials.lazy(), factors.lazy(),
                                      **{**HIGGINS, **(higgins_opts or {})})
        frames["higgins"], frames["higgins_spread"] = h, equivalence.higgins_spread(h)
    frames.update(metrics_frames(root, study, metrics) if metrics else {})   # issue 16
    chosen = trial or choose_trial(rows)
    frames["factors"] = factors.filter(pl.col("trial_id") == chosen) if chosen else factors.clear()
    picks = pick_traversals(root, study, rows)
    front = search_front(root, study)
    if front is not None:              # an Optuna search: its own objectives' front
        frames["tradeoff"] = frames["tradeoff"].with_columns(
            pareto=pl.col("trial_id").is_in(front["trial_id"].to_list()))
        picks = {tid: png for tid in front["trial_id"].to_list()[:3]
                 if (png := load.traversal_png(root, study, tid)) is not None} or picks
    return figures.Tables(frames, picks, config_labels(rows), chosen)


def search_front(root: str, study: str) -> pl.DataFrame | None:
    """analysis/pareto.parquet, which an Optuna search writes on its objectives."""
    st = load.store(root, study)
    path = st.path("analysis", "pareto.parquet")
    if not st.exists(path):
        return None
    import io
    return pl.read_parquet(io.BytesIO(st.read_bytes(path)))


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
    return (said + " " if said else "") + f"Study {study!r}: {counts}."


def _about(spec: dict | None) -> list[tuple]:
    """The study's description and size from study.json (absent for `vaestudy train`)."""
    if not spec:
        return []
    raw = spec.get("spec") if isinstance(spec.get("spec"), dict) else {}
    parts = [str(raw["description"]).rstrip(".") + "."] if raw.get("description") else []
    parts += [f"Size: {spec['size']}."] if spec.get("size") else []
    text = " ".join(parts)
    return [("p", text)] if text else []


def _overview(study: str, t: figures.Tables, spec: dict | None) -> list[tuple]:
    out = [("h", 1, f"Study {study}: analysis report"), ("lead", lead(study, t)), *_about(spec),
           ("h", 2, "Trials by state"), ("table", t.get("states"))]
    if t.get("failures").height:
        out += [("p", "Trials that failed or diverged, with their reason:"),
                ("table", t.get("failures"))]
    return out + [
        ("h", 2, "Intrinsic dimension (Theorem 1)"),
        ("p", "Per configuration across seeds at each trial's last evaluated epoch; used factors "
              "have mi_h > 0.5 nats (App. E); the equivalent variance is beta * sigma2 "
              "(Sec. 7.2.1), with the learned sigma2 for learned noise."),
        ("table", intrinsic_view(t.get("intrinsic_dimension")))]


def _equivalence(t: figures.Tables) -> list[tuple]:
    L, front = t.labels, t.get("tradeoff")
    return [
        ("h", 2, "Factor equivalence (Theorems 4-5)"),
        ("p", "Pairs of seeds of one configuration: R^2 after aligning their used factors by an "
              "orthogonal Procrustes fit and by the best signed permutation."),
        ("table", _labelled(t.get("seed_pairs"), L)),
        ("h", 3, "Against the ground-truth factors"),
        ("table", _labelled(t.get("ground_truth"), L)),
        ("h", 3, "Higgins et al. metric (App. C): across seeds and under random rotations"),
        ("table", _labelled(t.get("higgins_spread"), L)),
        ("h", 2, "Trade-off: Pareto-optimal trials (max EVLB, min kl_qz_pz)"),
        ("table", _labelled(front.filter(pl.col("pareto")), L) if front.height else front),
        ("h", 2, "Learned noise (Fig. 8-9)"), ("table", t.get("learned_noise"))]


def blocks(root: str, study: str, t: figures.Tables, drawn: list) -> list[tuple]:
    """The report's content, in order, for `render.markdown` and `render.to_html`."""
    spec = load.study_spec(root, study)
    text = json.dumps(spec, indent=1, default=str) if spec else \
        "(no study.json: a `vaestudy train` study)"
    return (_overview(study, t, spec) + [("h", 2, "Figures")] + [("figure", d) for d in drawn]
            + _equivalence(t) + metrics_section(t.frames.get("metrics"), t.labels)
            + [("h", 2, "Spec"), ("pre", text)])


def write_tables(st, frames: dict[str, pl.DataFrame]) -> None:
    for name, frame in frames.items():
        if name == "factors":
            continue
        buf = io.BytesIO()
        frame.write_parquet(buf)
        st.write_bytes(st.path("analysis", f"{name}.parquet"), buf.getvalue())


def build_report(root: str, study: str, *, higgins: bool = True, trial: str | None = None,
                 higgins_opts: dict | None = None, metrics: tuple[str, ...] = ()) -> Path:
    """Write report.md, report.html, analysis/*.parquet and analysis/figures/*.png; return
    the path of report.html (under ROOT/STUDY)."""
    st = load.store(root, study)
    t = compute_tables(root, study, higgins=higgins, trial=trial, higgins_opts=higgins_opts,
                       metrics=metrics)
    write_tables(st, t.frames)
    drawn = figures.draw_all(t)
    for d in drawn:
        if d.png:
            st.write_bytes(st.path("analysis", "figures", f"{d.name}.png"), d.png)
    b = blocks(root, study, t, drawn)
    st.write_bytes(st.path("report.md"), render.markdown(b, "analysis/figures").encode())
    st.write_bytes(st.path("report.html"), render.to_html(b, f"{study}: report").encode())
    return Path(st.path("report.html"))


def summary_table(root: str, study: str) -> str:
    """One line per configuration: noise, beta, sigma2 / equivalent variance, seeds, used
    factors mean ± sd, EVLB mean. What `vaestudy run` prints when a study ends."""
    table = intrinsic.from_study(root, study)
    if table.is_empty():
        return "no finished trial yet"
    head = f"{'noise':<10}{'beta':>7}{'sigma2':>10}{'equiv.var':>11}{'seeds':>6}" \
           f"{'used factors':>15}{'evlb':>11}"
    lines = [head]
    for r in table.iter_rows(named=True):
        sd = r["n_used_std"] if r["n_used_std"] is not None else 0.0
        s2 = r["sigma2_cfg"] if r["noise"] == "specified" else r["sigma2_mean"]   # learnt
        lines.append(f"{r['noise']:<10}{r['beta']:>7.3g}{s2:>10.3g}"
                     f"{r['equivalent_sigma2']:>11.3g}{r['seeds']:>6}"
                     f"{r['n_used_mean']:>9.2f} ± {sd:<4.2f}{r['evlb_mean']:>11.1f}")
    P = table["true_factors"].drop_nulls()
    if P.len():
        lines.append(f"(true intrinsic dimension P = {int(P[0])})")
    return "\n".join(lines)
