"""Compaction: the finished trials' files merged into one sorted Parquet file per table.

    <table>/compact-<gen>.parquet    trials sorted by (trial_id, key), row groups of whole
                                     trials; footer metadata lists the trials it holds

`compact` takes every finished (completed or diverged: never rewritten) trial
not yet in the latest compact file, and writes generation gen+1 holding the
old file's trials and the new ones: a hidden temp file renamed into place on a
local disk, one upload published at close on an object store. Only after
every table's new file is published, and a grace period for readers that
listed the old files, are the old generation and the merged per-trial folders
deleted.

Readers (`table_files`) take the latest generation and the per-trial files of
trials it does not list, so a row is never read twice; a file that vanished
between listing and reading (a compaction finished meanwhile) makes the loader
list again, and the new generation holds its rows, so none is missed. A
finished, compacted study is a plain folder of Parquet files for any directory
reader; a running one holds the compact file and per-trial folders of the
trials still running, which `analysis/load.py` reads without duplicates.
"""
from __future__ import annotations

import heapq
import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from trainables.store import (FINISHED, FORMAT_KEY, FORMAT_VERSION, SCHEMAS, TABLES, ResultStore,
                              check_format)

COMPACT = re.compile(r"compact-(\d+)\.parquet$")
KEYS = {"trials": ["trial_id", "epoch"], "factors": ["trial_id", "epoch", "factor"],
        "codes": ["trial_id", "epoch", "point"]}
GROUP_ROWS = {"trials": 20_000, "factors": 256_000, "codes": 50_000}   # whole trials per group
PREFETCH = 64                                  # per-trial files read ahead, in parallel


def hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def listing(store: ResultStore, table: str) -> tuple[list[tuple[int, str]], dict[str, list[str]]]:
    """([(gen, path)] of compact files, {trial_id: [part paths]}) from one recursive listing."""
    sel = pafs.FileSelector(store.path(table), recursive=True, allow_not_found=True)
    base = store.path(table) + "/"
    compacts, parts = [], {}
    for info in store.fs.get_file_info(sel):
        if info.type != pafs.FileType.File or not info.path.endswith(".parquet"):
            continue
        rel = info.path[len(base):]
        if any(hidden(p) for p in rel.split("/")):
            continue
        if "/" not in rel and (m := COMPACT.fullmatch(rel)):
            compacts.append((int(m[1]), info.path))
        elif rel.count("/") == 1:
            parts.setdefault(rel.split("/")[0], []).append(info.path)
    return sorted(compacts), {t: sorted(p) for t, p in parts.items()}


def covered(store: ResultStore, path: str) -> set[str]:
    """The trials a compact file holds, from its footer."""
    with store.fs.open_input_file(path) as f:
        meta = pq.read_metadata(f).metadata or {}
    check_format(meta.get(FORMAT_KEY, 1), path)
    return set(json.loads(meta[b"vaestudy"])["trials"])


def table_files(store: ResultStore, table: str) -> list[str]:
    """The files holding each row of `table` once: the latest compact file and the per-trial
    files of trials it does not hold."""
    compacts, parts = listing(store, table)
    if not compacts:
        return [p for t in sorted(parts) for p in parts[t]]
    latest = compacts[-1][1]
    held = covered(store, latest)
    return [latest] + [p for t in sorted(parts) if t not in held for p in parts[t]]


# ---- writing -----------------------------------------------------------------------

def compact(store: ResultStore, grace_s: float = 5.0) -> int:
    """Merge every finished trial into one file per table; returns how many trials were new."""
    rows, _ = store.trial_states()
    finished = {t for t, r in rows.items() if r.get("state") in FINISHED}
    plans = {}
    for table in TABLES:
        compacts, parts = listing(store, table)
        held = covered(store, compacts[-1][1]) if compacts else set()
        new = sorted(t for t in finished - held if t in parts)
        if new:
            plans[table] = (compacts, held, new, parts)
    for table, (compacts, held, new, parts) in plans.items():
        _write_generation(store, table, compacts, held, new, parts)
    if plans:
        time.sleep(grace_s)                       # readers that listed the old files
    for table, (compacts, _, new, parts) in plans.items():
        _delete_merged(store, [p for _, p in compacts], [store.path(table, t) for t in new],
                       [p for t in new for p in parts[t]])
    return max((len(p[2]) for p in plans.values()), default=0)


def _write_generation(store, table, compacts, held, new, parts) -> None:
    gen = compacts[-1][0] + 1 if compacts else 1
    old = _old_trials(store, compacts[-1][1]) if compacts else iter(())
    merged = heapq.merge(old, _new_trials(store, table, new, parts), key=lambda kv: kv[0])
    trials = sorted(held | set(new))
    info = {"format_version": FORMAT_VERSION, "gen": gen, "trials": trials}
    schema = SCHEMAS[table].with_metadata({"vaestudy": json.dumps(info),
                                           FORMAT_KEY: str(FORMAT_VERSION).encode()})
    name = f"compact-{gen:06d}.parquet"
    final = store.path(table, name)
    target = store.path(table, f".{name}.tmp-{uuid.uuid4().hex[:8]}") if store.local else final
    with store.fs.open_output_stream(target) as out, \
            pq.ParquetWriter(out, schema, compression="zstd") as writer:
        batch, n = [], 0
        for _, t in merged:
            batch.append(t)
            n += t.num_rows
            if n >= GROUP_ROWS[table]:
                writer.write_table(pa.concat_tables(batch), row_group_size=n)
                batch, n = [], 0
        if batch:
            writer.write_table(pa.concat_tables(batch), row_group_size=n)
    if store.local:
        os.replace(target, final)


def _old_trials(store: ResultStore, path: str) -> Iterator[tuple[str, pa.Table]]:
    """(trial_id, rows) of a compact file, in its order, a row group at a time."""
    with store.fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            yield from _by_trial(pf.read_row_group(i))


def _by_trial(t: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    ids = t.column("trial_id").to_pylist()
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            yield ids[start], t.slice(start, i - start)
            start = i


def _new_trials(store, table, new, parts) -> Iterator[tuple[str, pa.Table]]:
    """(trial_id, its rows deduped and sorted) for each new trial, read ahead in parallel."""
    def read(tid: str) -> pa.Table:
        t = pa.concat_tables([_conform(store._read_file(p), table) for p in parts[tid]])
        frame = pl.from_arrow(t)
        if table == "trials":                     # the row written last wins, as in the loader
            frame = frame.sort("written_at", nulls_last=False)
        frame = frame.unique(KEYS[table], keep="last", maintain_order=True).sort(KEYS[table])
        return frame.to_arrow().cast(SCHEMAS[table])

    with ThreadPoolExecutor(8) as pool:
        for i in range(0, len(new), PREFETCH):
            chunk = new[i:i + PREFETCH]
            yield from zip(chunk, pool.map(read, chunk))


def _conform(t: pa.Table, table: str) -> pa.Table:
    """A file's rows in the store's schema: columns it lacks (an older file) as nulls."""
    schema = SCHEMAS[table]
    cols = [t.column(f.name).cast(f.type) if f.name in t.column_names
            else pa.nulls(t.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _delete_merged(store: ResultStore, old_files: list[str], folders: list[str],
                   files: list[str]) -> None:
    """The older compact files and the merged trials' files: on disk their folders; on an
    object store the listed files, 1,000 to a request (no folders there, and a listing and
    a delete per folder would cost two requests per trial)."""
    if not store.local:
        store.delete_many(old_files + files)
        return
    for p in old_files:
        store.delete(p)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(store.delete_dir, folders))
