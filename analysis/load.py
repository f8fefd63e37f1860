"""Lazy loading of a study's results: each (trial_id, epoch) once, with its state.

The result store (`trainables/store.py`) owns the layout and the schemas; this
module only reads them. A table is a lazy frame whose files are chosen when it
is collected (`trainables.compact.table_files`: the latest compact file and the
per-trial files of trials it does not hold), listed again if compaction removed
one meanwhile, so a row is neither read twice nor missed while a study runs or
is compacted. A crash between a segment write and its merge can leave the same
rows in two files, so each loader dedupes on its key (for `trials` the row
written last wins). A table with no file yet is an empty frame with the
store's schema. Trial states come from the driver's status table when it is
current, else from the status files (`ResultStore.trial_states`).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from polars.io.plugins import register_io_source

from trainables.compact import table_files
from trainables.store import FORMAT_KEY, SCHEMAS, ResultStore, check_format

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


LIST_TRIES = 5                                # listings per collect, if files vanish


def scan(root: str, study: str, table: str) -> pl.LazyFrame:
    """All rows of one table as stored (lazy); files are listed when it is collected."""
    st = store(root, study)
    schema = pl.from_arrow(SCHEMAS[table].empty_table()).schema

    def source(with_columns, predicate, n_rows, batch_size):
        frame = pl.from_arrow(read_table(st, table, with_columns))
        if predicate is not None:
            frame = frame.filter(predicate)
        yield frame if n_rows is None else frame.head(n_rows)

    return register_io_source(source, schema=schema)


def read_table(st: ResultStore, table: str, columns: list[str] | None = None) -> pa.Table:
    """Every file of the table now, read in parallel; listed again if one vanished."""
    names = columns or SCHEMAS[table].names
    for attempt in range(LIST_TRIES):
        try:
            files = table_files(st, table)
            parts = st.read_many(files, lambda p: read_file(st, p, table, names))
            break
        except FileNotFoundError:
            if attempt == LIST_TRIES - 1:
                raise
    schema = pa.schema([SCHEMAS[table].field(n) for n in names])
    return pa.concat_tables(parts) if parts else schema.empty_table()


def read_file(st: ResultStore, path: str, table: str, names: list[str]) -> pa.Table:
    """The columns `names` of one file in the store's types; ones it lacks as nulls."""
    with st.fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        check_format((pf.schema_arrow.metadata or {}).get(FORMAT_KEY, 1), path)
        have = [n for n in names if n in pf.schema_arrow.names]
        t = pf.read(columns=have)
    fields = [SCHEMAS[table].field(n) for n in names]
    cols = [t.column(f.name).cast(f.type) if f.name in have else pa.nulls(t.num_rows, f.type)
            for f in fields]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


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
    """One row per trial with a status: trial_id, state, error."""
    states, _ = store(root, study).trial_states()
    rows = [{"trial_id": t, "state": s.get("state"), "error": s.get("error")}
            for t, s in states.items()]
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
