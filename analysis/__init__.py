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
import importlib

# Re-exported lazily: the driver imports light modules of this package (analysis.sequential
# when it parses a spec) and must not pay for the report's imports.
_EXPORTS = {"build_report": "analysis.report", "summary_table": "analysis.report",
            "pareto_mask": "analysis.tradeoff", "intrinsic_dimension": "analysis.intrinsic"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
