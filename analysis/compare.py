"""`vaestudy report A B ...`: one page comparing studies' intrinsic-dimension tables and
their Theorem 1 verdicts, written as compare-<A>-<B>....html beside the first study."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from analysis import intrinsic, load, render, report


def compare_table(studies: list[tuple[str, str]], opts: report.Options) -> pl.DataFrame:
    """The intrinsic-dimension views of every study, stacked with a `study` column."""
    frames = []
    for root, name in studies:
        rows = load.counted(load.trials(root, name, last=False), opts.include_running)
        table = intrinsic.intrinsic_dimension(rows, load.scan_factors(root, name),
                                              opts.threshold).collect()
        labels = report.labels(load.trials(root, name).collect())
        frames.append(report.intrinsic_view(table, labels)
                      .with_columns(pl.lit(name).alias("study")))
    return pl.concat(frames, how="diagonal_relaxed").select("study", pl.exclude("study"))


def build_compare(studies: list[tuple[str, str]], opts: report.Options) -> Path:
    root, first = studies[0]
    table = compare_table(studies, opts)
    verdicts = []
    for r, name in studies:
        said = intrinsic.reached_p(intrinsic.from_study(r, name, opts.threshold,
                                                        opts.include_running))
        verdicts.append(("p", f"{name}: {said or 'the data set has no known P.'}"))
    blocks = ([("h", 1, "Comparison: " + ", ".join(n for _, n in studies))] + verdicts
              + [("table", table)])
    st = load.store(root, first)
    path = st.base.rsplit("/", 1)[0] + "/compare-" + "-".join(n for _, n in studies) + ".html"
    st.write_bytes(path, render.to_html(blocks, "comparison").encode())
    return Path(path)
