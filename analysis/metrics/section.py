"""The report's disentanglement-metrics section: per configuration, mean and 95% interval
over seeds (Student t with n - 1 degrees of freedom; with fewer than 3 seeds, n and the
mean only, never "± 0"). UDR's seeds share their pairs, so its interval is not the t-interval
over seeds but the leave-one-seed-out jackknife's (`analysis.metrics.udr.config_interval`),
stored beside each trial's score as `udr_<variant>_config_ci95`."""
from __future__ import annotations

import polars as pl
from scipy.stats import t as student_t

from analysis.metrics import METRICS
from analysis.metrics.table import COLUMNS

CONFIG_CI = "_config_ci95"      # a column holding a configuration's interval, not a score
SHARED_PAIRS = {c for m in METRICS.values() if m.kind == "seeds" for c in m.columns
                if not c.endswith(CONFIG_CI)}
UDR_NOTE = ("UDR (Duan et al. 2020; the column names its variant: udr_lasso, udr_spearman) "
            "needs no ground truth: a trial's score is the median, over the other seeds of its "
            "configuration, of how well their used codes and its own match dim for dim on "
            "common evaluation points; a configuration's cell is the mean over its seeds with a "
            "95% interval from the leave-one-seed-out jackknife (Student's t, seeds - 1 "
            "degrees of freedom), as the seeds' scores share their pairs; below 3 seeds, the "
            "mean and n. A configuration with one seed has none.")


def summary(table: pl.DataFrame) -> pl.DataFrame:
    """Per config_key: seeds, and per score its mean, sd and t-interval half-width."""
    present = [c for c in COLUMNS if c in table.columns and table[c].is_not_null().any()
               and not c.endswith(CONFIG_CI)]
    if table.is_empty() or not present:
        return pl.DataFrame({"config_key": []}, schema={"config_key": pl.String})
    agg = [pl.col("seed").n_unique().alias("seeds")]
    for c in present:
        agg += [pl.col(c).mean().alias(f"{c}_mean"), pl.col(c).std().alias(f"{c}_sd"),
                pl.col(c).count().alias(f"{c}_n")]
        if c in SHARED_PAIRS:
            agg.append(pl.col(c + CONFIG_CI).drop_nulls().first().alias(f"{c}_jackknife"))
    out = table.group_by("config_key").agg(agg).sort("config_key")
    return out.with_columns(
        pl.col(f"{c}_jackknife").alias(f"{c}_ci95") if c in SHARED_PAIRS else
        (pl.col(f"{c}_sd") / pl.col(f"{c}_n").sqrt()
         * pl.col(f"{c}_n").map_elements(_t975, return_dtype=pl.Float64))
        .alias(f"{c}_ci95") for c in present)


def _t975(n: int) -> float | None:
    return float(student_t.ppf(0.975, n - 1)) if n >= 3 else None


def view(summ: pl.DataFrame, labels: dict[str, str]) -> pl.DataFrame:
    """'0.62 ± 0.05' cells (mean ± 95% half-width), or '0.62 (n=2)' below 3 seeds."""
    if summ.is_empty():
        return summ
    scores = [c[:-5] for c in summ.columns if c.endswith("_mean")]
    cells = []
    for c in scores:
        m, h, n = pl.col(f"{c}_mean").round(3), pl.col(f"{c}_ci95").round(3), pl.col(f"{c}_n")
        cells.append(pl.when(pl.col(f"{c}_ci95").is_not_null())
                     .then(pl.format("{} ± {}", m, h))
                     .otherwise(pl.format("{} (n={})", m, n)).alias(c))
    label = pl.col("config_key").replace_strict(labels, default=pl.col("config_key"))
    return summ.select(label.alias("configuration"), "seeds", *cells)


def metrics_section(table: pl.DataFrame | None, labels: dict[str, str],
                    costs: list[str] | None = None) -> list[tuple]:
    """Report blocks: heading, what the scores are, the per-configuration table, and why some
    trials have none."""
    if table is None:
        return []
    shown = [m.title for m in METRICS.values()
             if any(c in table.columns and table[c].is_not_null().any() for c in m.columns)]
    out = [("h", 2, "Disentanglement metrics"),
           ("p", "Per configuration over seeds: mean ± 95% t-interval (n and the mean alone "
                 "below 3 seeds). Shown: " + ("; ".join(shown) or "none") + ". Codes-based "
                 "metrics are computed from each trial's stored codes (mu, truth); FactorVAE "
                 "and BetaVAE re-encode rendered images in a fast setting, not the published "
                 "10,000/5,000 batches. Where the Lasso DCI predicts no factor above chance, "
                 "its disentanglement and completeness are empty (nothing to attribute). "
                 "Choices per metric: docs/analysis.md. Per trial: analysis/metrics.parquet.")]
    if any(c in table.columns and table[c].is_not_null().any() for c in SHARED_PAIRS):
        out.append(("p", UDR_NOTE))
    if table.is_empty():
        return out + [("p", "No trial with stored codes yet.")]
    out.append(("table", view(summary(table), labels)))
    na = table.filter(pl.col("not_applicable").is_not_null()) \
        .select("trial_id", "not_applicable")
    if na.height:
        out += [("p", "Not applicable, with the reason:"), ("table", na.unique("not_applicable"))]
    if costs:
        out.append(("p", "Cost: " + "; ".join(costs) + "."))
    return out


def metrics_frames(root: str, study: str, names, seed: int = 0, log=print) -> dict:
    """{"metrics": the per-trial table, "metrics_summary": per configuration}; prints each
    metric's cost per trial. The report writes both as analysis/<name>.parquet."""
    from analysis.metrics.table import cost_lines, metrics_table

    costs: dict = {}
    table = metrics_table(root, study, names, seed=seed, costs=costs)
    for line in cost_lines(costs):
        log(f"metrics cost: {line}")
    return {"metrics": table, "metrics_summary": summary(table)}
