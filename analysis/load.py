"""Lazy loading of a study's results: each (trial_id, epoch) once, with its state.

The results layer (`results/`) owns the layout and the schemas; this
module only reads them. A table is a lazy frame whose files are chosen when it
is collected (`resultstore.compact.table_files`: the latest compact file and the
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
import time
from functools import lru_cache

import polars as pl
import pyarrow as pa
from polars.io.plugins import register_io_source

from resultstore import lease
from resultstore.compact import table_files
from resultstore.format import COMPACT, SCHEMAS
from resultstore.store import ResultStore

KEYS = {"trials": ["trial_id", "epoch"], "factors": ["trial_id", "epoch", "factor"],
        "codes": ["trial_id", "epoch", "point"]}
# Keys that change how a trial runs but not what it learns: seeds of one configuration share
# everything else.
NOT_CONFIG = {"train": ("seed", "device", "threads", "fault_epoch_delay"),
              "checkpoint": ("every", "keep", "final"),
              "eval": ("traversals", "traversal_images", "codes_points")}
USABLE = ("completed", "running")             # states whose last row is a result
COUNTED = ("completed",)                      # what the aggregates count by default
STALE_AFTER_S = 6 * 3600                      # a `running` status untouched this long is stale


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
    # a trial's own file is small: on S3 one GET of all of it beats a HEAD and two ranged
    # GETs (footer, columns); a compact file is large, read by ranges, projected columns only
    t = st.read_parquet(path, columns=names, whole=not COMPACT.search(path))
    have = [n for n in names if n in t.column_names]
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


# A series (a line in Fig. 4-6, 8-9) holds every setting but the plotted axis and the seed:
# the equivalent variance beta * sigma2 (Sec. 7.2.1) or beta.
AXIS = {"noise": ("sigma2", "beta")}


def _without(config: str, *drops: dict) -> dict:
    cfg = json.loads(config)
    for drop in drops:
        for section, names in drop.items():
            for name in names:
                cfg.get(section, {}).pop(name, None)
    return cfg


def _hash(prefix: str, cfg: dict) -> str:
    return prefix + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8]


def config_key(config: str) -> str:
    """Stable id of a trial's configuration without its seed: the seeds of one setting share it."""
    return _hash("c", _without(config, NOT_CONFIG))


def series_key(config: str) -> str:
    """Stable id of a trial's series: its configuration without the plotted axis."""
    return _hash("s", _without(config, NOT_CONFIG, AXIS))


def flat(config: str) -> dict[str, object]:
    """The configuration (no seed) as {"section.key": value}."""
    return {f"{sec}.{k}": v for sec, d in _without(config, NOT_CONFIG).items()
            if isinstance(d, dict) for k, v in d.items()}


def differing_labels(configs: dict[str, str], drop: tuple[str, ...] = ()) -> dict[str, str]:
    """key -> 'noise.kind=learned, dataset.factors=3': the settings in which the given
    configurations differ (all of them but `drop`), so every line and row is told apart."""
    flats = {k: flat(c) for k, c in configs.items()}
    names = sorted({n for f in flats.values() for n in f} - set(drop))
    varying = [n for n in names if len({json.dumps(f.get(n)) for f in flats.values()}) > 1]
    short = lambda n: n.split(".", 1)[1] if n.startswith(("noise.", "model.", "train.")) \
        else n                                                        # noqa: E731
    return {k: ", ".join(f"{short(n)}={f.get(n)}" for n in varying) or "all"
            for k, f in flats.items()}


def _mapped(fn):
    def apply(configs: pl.Series) -> pl.Series:
        uniq = configs.unique().drop_nulls().to_list()
        mapping = dict(zip(uniq, (fn(c) for c in uniq)))
        return configs.replace_strict(mapping, default=None, return_dtype=pl.String)
    return apply


def config_columns() -> list[pl.Expr]:
    """Columns read from the trial config: the nominal sigma2, the config and series keys."""
    c = pl.col("config")
    return [c.str.json_path_match("$.noise.sigma2").cast(pl.Float64).alias("sigma2_cfg"),
            c.map_batches(_mapped(config_key), return_dtype=pl.String).alias("config_key"),
            c.map_batches(_mapped(series_key), return_dtype=pl.String).alias("series_key")]


def driver_alive(root: str, study: str) -> bool:
    """Whether a live driver holds the study's lease (resultstore/lease.py: not released, renewed
    within its ttl by the storage's clock, its process alive where it is on this host)."""
    return lease.live_holder(store(root, study)) is not None


def status_frame(root: str, study: str) -> pl.DataFrame:
    """One row per trial with a status: trial_id, state, error, stale.

    `stale` marks a `running` trial that nothing runs: no live driver holds the study, or
    its status has not changed for STALE_AFTER_S (a driver that died on another host)."""
    alive, now = driver_alive(root, study), time.time()
    states, _ = store(root, study).trial_states()
    rows = [{"trial_id": t, "state": s.get("state"), "error": s.get("error"),
             "stale": s.get("state") == "running" and
             (not alive or now - float(s.get("updated") or now) > STALE_AFTER_S)}
            for t, s in states.items()]
    schema = {"trial_id": pl.String, "state": pl.String, "error": pl.String, "stale": pl.Boolean}
    return pl.DataFrame(rows, schema=schema)


def last_epochs(trials: pl.LazyFrame) -> pl.LazyFrame:
    """(trial_id, epoch) of each trial's last evaluated epoch."""
    return trials.group_by("trial_id").agg(pl.col("epoch").max())


def trials(root: str, study: str, last: bool = True) -> pl.LazyFrame:
    """The trials table, each (trial_id, epoch) once, with `state`, `sigma2_cfg`, `config_key`.

    `state` is the status file's (running | completed | diverged | failed), else the
    last row's status. With `last`, one row per trial: its last evaluated epoch.
    """
    # cached: the plan below refers to these rows five times, and each reference would
    # read every file again (three requests per file on S3); cached, one read of the
    # columns they need together
    rows = dedupe(scan(root, study, "trials"), "trials").cache()
    final = rows.join(last_epochs(rows), on=["trial_id", "epoch"], how="semi")
    status = status_frame(root, study).lazy()
    last_status = final.select("trial_id", pl.col("status").alias("last_status"))
    last_epoch = final.select("trial_id", pl.col("epoch").alias("last_epoch"))
    return ((final if last else rows).join(status, on="trial_id", how="left")
            .join(last_status, on="trial_id", how="left")
            .join(last_epoch, on="trial_id", how="left")
            .with_columns(pl.coalesce("state", "last_status").alias("state"),
                          pl.col("stale").fill_null(False))
            .drop("last_status")
            .with_columns(*config_columns(), *older_formats()))


def older_formats() -> list[pl.Expr]:
    """Columns that format-2 files lack, derived where they can be: a mixture's arithmetic
    equivalent variance was `equivalent_sigma2`, its precision-weighted one is recomputed
    from noise_pi and noise_sigma2_k (Sec. 7.2.1); normal_var_tol was 0.1 unless set."""
    c = pl.col
    old = c("equivalent_sigma2_arith").is_null()
    precision = (c("noise_pi") / c("noise_sigma2_k")).list.sum()      # sum_k pi_k / sigma2_k
    tol = c("config").str.json_path_match("$.eval.normal_var_tol").cast(pl.Float64)
    return [pl.when(old & c("noise_pi").is_not_null()).then(c("beta") / precision)
            .otherwise(c("equivalent_sigma2")).alias("equivalent_sigma2"),
            pl.when(old).then(c("equivalent_sigma2")).otherwise(c("equivalent_sigma2_arith"))
            .alias("equivalent_sigma2_arith"),
            pl.coalesce(c("normal_var_tol"), tol, pl.lit(0.1)).alias("normal_var_tol")]


def counted(trials_all: pl.LazyFrame, include_running: bool = False) -> pl.LazyFrame:
    """One row per counted trial: completed trials at their last epoch; with
    `include_running`, completed and running (not stale) trials compared at a common epoch,
    the earliest last epoch among them (each trial's latest row at or before it)."""
    states = USABLE if include_running else COUNTED
    rows = trials_all.filter(pl.col("state").is_in(states) & ~pl.col("stale"))
    if not include_running:
        return rows.filter(pl.col("epoch") == pl.col("last_epoch"))
    common = rows.select(pl.col("last_epoch").min()).collect().item()
    return (rows.filter(pl.col("epoch") <= (common if common is not None else 0))
            .sort("epoch").group_by("trial_id").last())


def factors(root: str, study: str, last: bool = True) -> pl.LazyFrame:
    """The factors table, each (trial_id, epoch, factor) once; with `last`, the last epoch only."""
    frame = scan(root, study, "factors")
    if last:
        trials_rows = dedupe(scan(root, study, "trials"), "trials").select("trial_id", "epoch")
        ends = last_epochs(trials_rows)
        frame = frame.join(ends, on=["trial_id", "epoch"], how="semi")
    return dedupe(frame, "factors")


def scan_factors(root: str, study: str) -> pl.LazyFrame:
    """Every factor row as stored, duplicates included (lazy): join it to the rows you
    count, then dedupe (`intrinsic.factor_counts` does)."""
    return scan(root, study, "factors")


def codes(root: str, study: str) -> pl.LazyFrame:
    """The codes table (posterior means and log-variances at the last evaluation), deduped."""
    return dedupe(scan(root, study, "codes"), "codes")


def study_spec(root: str, study: str) -> dict | None:
    """study.json as written by the study runner; None for a `vaestudy train` study."""
    return store(root, study).read_meta()


def traversal_png(root: str, study: str, trial_id: str) -> bytes | None:
    st = store(root, study)
    return st.read_optional(st.path("traversals", f"{trial_id}.png"))
