"""Analysis of a study's Parquet results: Polars statistics, the paper's figures, the report.

    load         lazy tables, each (trial_id, epoch) once, with state and config key
    intrinsic    Theorem 1: used-factor counts per configuration across seeds
    align        Procrustes / signed permutation / linear maps (Theorems 4-5)
    equivalence  those fits on the codes table; the Higgins et al. metric per trial
    higgins      the Higgins et al. (2016) metric and its rotation dependence (App. C)
    tradeoff     reconstruction vs disentanglement, `pareto_mask`
    plots        plot_x(frame, ax) -> Axes; figures: the registry; report: report.md/.html
"""
from analysis.intrinsic import intrinsic_dimension
from analysis.report import build_report, summary_table
from analysis.tradeoff import pareto_mask

__all__ = ["build_report", "summary_table", "pareto_mask", "intrinsic_dimension"]
