"""Which code computed a study's trials, for the report.

A trial id hashes the experiment's config, not the code that ran it, so a study
extended after an upgrade (`vaestudy extend`), or one that copied trials in from
another study (`reuse:`), can hold trials computed by different versions of
vaestudy. Every row records its `code_version` (resultstore/format.py); the report
lists the versions and, where there is more than one, says so before anything is
compared across them.
"""
from __future__ import annotations

import polars as pl


def code_versions(last: pl.DataFrame) -> pl.DataFrame:
    """One row per code version: how many trials (by their last row) it computed, and when."""
    if last.is_empty() or "code_version" not in last.columns:
        return pl.DataFrame(schema={"code_version": pl.String, "trials": pl.UInt32,
                                    "first_written": pl.Datetime("ms", "UTC"),
                                    "last_written": pl.Datetime("ms", "UTC")})
    return (last.group_by(pl.col("code_version").fill_null("unknown"))
            .agg(pl.len().alias("trials"), pl.col("written_at").min().alias("first_written"),
                 pl.col("written_at").max().alias("last_written"))
            .sort("first_written", nulls_last=True))


def section(t, opts=None) -> list[tuple]:
    """The report's blocks: one line for one version; a flag and the table for several."""
    table = t.get("code_versions")
    if table.is_empty():
        return []
    if table.height == 1:
        return [("h", 2, "Code version"),
                ("p", f"All {table['trials'][0]} trials were computed by vaestudy "
                      f"{table['code_version'][0]}.")]
    return [("h", 2, "Code versions: MIXED"),
            ("p", f"This study's trials were computed by {table.height} versions of vaestudy "
                  "(trials kept by `vaestudy extend` or copied in by `reuse:` keep the version "
                  "that computed them; a trial id hashes the config, not the code). Aggregates "
                  "pool them: check that no change between these versions alters the numbers "
                  "compared (the changelog, or rerun a few trials in a new study)."),
            ("table", table)]
