"""Lazy loading of a study's results: each (trial_id, epoch) once, with its state.

The result store (`trainables/store.py`) owns the layout and the schemas; this
module only reads them. Every table is scanned with `pl.scan_parquet` over
ROOT/STUDY/<table>/**/*.parquet and stays lazy until a table or figure is made.
A crash between a segment write and its merge can leave the same rows in two
files, so each loader dedupes on its key (for `trials` the row written last
wins). A table with no file yet is an empty frame with the store's schema.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import polars as pl
import pyarrow.fs as pafs

from trainables.store import SCHEMAS, ResultStore

KEYS = {"trials": ["trial_id", "epoch"], "factors": ["trial_id", "epoch", "factor"],
        "codes": ["trial_id", "epoch", "point"]}
# Keys that change how a trial runs but not what it learns: seeds of one configuration share
# everything else.
NOT_CONFIG = {"train": ("seed", "device", "threads"), "checkpoint": ("every", "keep"),
              "eval": ("traversals", "traversal_images", "codes_points")}
USABLE = ("completed", "running")             # states whose last row is a result to aggregate


@lru_cache(maxsize=8)
def store(root: str, study: str) -> ResultStore:
    """The study's store; a study written in a results format this code cannot read is
    refused here, once, before any table is scanned."""
    st = ResultStore(root, study)
    st.read_meta()
    return st


def empty(table: str) -> pl.LazyFrame:
    return pl.from_arrow(SCHEMAS[table].empty_table()).lazy()


def has_files(st: ResultStore, table: str) -> bool:
    sel = pafs.FileSelector(st.path(table), recursive=True, allow_not_found=True)
    return any(i.path.endswith(".parquet") for i in st.fs.get_file_info(sel))


def scan(root: str, study: str, table: str) -> pl.LazyFrame:
    """All rows of one table as stored, duplicates included (lazy)."""
    st = store(root, study)
    if not has_files(st, table):
        return empty(table)
    return pl.scan_parquet(st.glob(table), hive_partitioning=False, missing_columns="insert",
                           extra_columns="ignore")


def dedupe(frame: pl.LazyFrame, table: str) -> pl.LazyFrame:
    """Each key once; for trials the row with the latest `written_at` wins."""
    if table == "trials":
        frame = frame.sort("written_at", nulls_last=False)
        return frame.unique(KEYS[table], keep="last")
    return frame.unique(KEYS[table], keep="any")


def config_key(config: str) -> str:
    """Stable id of a trial's configuration without its seed: the seeds of one setting share it."""
    cfg = json.loads(config)
    for section, names in NOT_CONFIG.items():
        for name in names:
            cfg.get(section, {}).pop(name, None)
    blob = json.dumps(cfg, sort_keys=True)
    return "c" + hashlib.sha256(blob.encode()).hexdigest()[:8]


def _config_keys(configs: pl.Series) -> pl.Series:
    uniq = configs.unique().drop_nulls()
    mapping = dict(zip(uniq.to_list(), (config_key(c) for c in uniq.to_list())))
    return configs.replace_strict(mapping, default=None, return_dtype=pl.String)


def config_columns() -> list[pl.Expr]:
    """Columns read from the trial config: the nominal sigma2 and the config key."""
    return [pl.col("config").str.json_path_match("$.noise.sigma2").cast(pl.Float64)
            .alias("sigma2_cfg"),
            pl.col("config").map_batches(_config_keys, return_dtype=pl.String).alias("config_key")]


def status_frame(root: str, study: str) -> pl.DataFrame:
    """One row per trial with a status file: trial_id, state, error."""
    rows = [{"trial_id": s.get("trial_id"), "state": s.get("state"), "error": s.get("error")}
            for s in store(root, study).all_status()]
    schema = {"trial_id": pl.String, "state": pl.String, "error": pl.String}
    return pl.DataFrame(rows, schema=schema)


def last_epochs(trials: pl.LazyFrame) -> pl.LazyFrame:
    """(trial_id, epoch) of each trial's last evaluated epoch."""
    return trials.group_by("trial_id").agg(pl.col("epoch").max())


def trials(root: str, study: str, last: bool = True) -> pl.LazyFrame:
    """The trials table, each (trial_id, epoch) once, with `state`, `sigma2_cfg`, `config_key`.

    `state` is the status file's (running | completed | diverged | failed), else the
    last row's status. With `last`, one row per trial: its last evaluated epoch.
    """
    rows = dedupe(scan(root, study, "trials"), "trials")
    final = rows.join(last_epochs(rows), on=["trial_id", "epoch"], how="semi")
    status = status_frame(root, study).lazy()
    last_status = final.select("trial_id", pl.col("status").alias("last_status"))
    return ((final if last else rows).join(status, on="trial_id", how="left")
            .join(last_status, on="trial_id", how="left")
            .with_columns(pl.coalesce("state", "last_status").alias("state"))
            .drop("last_status")
            .with_columns(config_columns()))


def factors(root: str, study: str, last: bool = True) -> pl.LazyFrame:
    """The factors table, each (trial_id, epoch, factor) once; with `last`, the last epoch only."""
    frame = scan(root, study, "factors")
    if last:
        trials_rows = dedupe(scan(root, study, "trials"), "trials").select("trial_id", "epoch")
        ends = last_epochs(trials_rows)
        frame = frame.join(ends, on=["trial_id", "epoch"], how="semi")
    return dedupe(frame, "factors")


def codes(root: str, study: str) -> pl.LazyFrame:
    """The codes table (posterior means and log-variances at the last evaluation), deduped."""
    return dedupe(scan(root, study, "codes"), "codes")


def study_spec(root: str, study: str) -> dict | None:
    """study.json as written by the study runner; None for a `vaestudy train` study."""
    return store(root, study).read_meta()


def traversal_png(root: str, study: str, trial_id: str) -> bytes | None:
    st = store(root, study)
    path = st.path("traversals", f"{trial_id}.png")
    return st.read_bytes(path) if st.exists(path) else None
