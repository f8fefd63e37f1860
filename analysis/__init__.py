"""Analysis of a study's Parquet results: Polars statistics, the paper's figures, the report.

    load         lazy tables, each (trial_id, epoch) once, with state, stale flag, config and
                 series keys; `counted` picks the trials the aggregates count
    stats        t-based 95% intervals and how tables show them
    intrinsic    Theorem 1: used-factor counts per configuration across seeds, the plateau rule
    align        held-out Procrustes / signed permutation / linear maps (Theorems 4-5; scipy)
    agreement    seed agreement: the pair statistic, its interval over seeds, the verdict
    calibration  that verdict on simulated codes of known truth: its error rates
    equivalence  those on the codes table; the ground-truth fits; the Higgins metric per trial
    higgins      the Higgins et al. (2016) metric (disentanglement_lib's) and App. C
    tradeoff     reconstruction vs disentanglement, `pareto_mask`
    plots        plot_x(frame, ax) -> Axes; figures: the registry; report: report.md/.html;
                 pages: a page per trial; compare: several studies on one page
"""
from analysis.intrinsic import intrinsic_dimension
from analysis.report import build_report, summary_table
from analysis.tradeoff import pareto_mask

__all__ = ["build_report", "summary_table", "pareto_mask", "intrinsic_dimension"]
