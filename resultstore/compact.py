"""Compaction: the finished trials' files merged into one sorted Parquet file per table.

    <table>/compact-<gen>.parquet    trials sorted by (trial_id, key), row groups of whole
                                     trials; footer metadata lists the trials it holds

`compact` takes every finished (completed or diverged: never rewritten) trial
not yet in the latest compact file, and builds generation gen+1, holding the old
file's trials and the new ones, in a scratch file that no reader can see (a
hidden file beside it on a local disk, a local temp file for an object store).
Before it becomes visible the new file is validated: its footer's trial list is
what was planned, and it holds, per trial, exactly the rows that were read. It is
then published with the backend's create-if-absent (a hard link; a conditional PUT
or multipart upload on S3), so a compaction that fails at any point leaves
readers' view unchanged, and of two compactions only one can publish a
generation; the other deletes nothing. Only after every table's new file is
published, and a grace period for readers that listed the old files, are the
old generation and the merged per-trial files deleted. `vaestudy compact` holds
the study's lease while it runs (resultstore/lease.py).

Readers (`table_files`) take the latest generation and the per-trial files of
trials it does not list, so a row is never read twice; a file that vanished
between listing and reading (a compaction finished meanwhile) makes the loader
list again, and the new generation holds its rows, so none is missed.
"""
from __future__ import annotations

import heapq
import json
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from resultstore.format import (COMPACT, FINISHED, FORMAT_KEY, FORMAT_VERSION, SCHEMAS, TABLES,
                            compact_name, hidden)
from resultstore.uri import StoreError

KEYS = {"trials": ["trial_id", "epoch"], "factors": ["trial_id", "epoch", "factor"],
        "codes": ["trial_id", "epoch", "point"]}
GROUP_ROWS = {"trials": 20_000, "factors": 256_000, "codes": 50_000}   # whole trials per group
PREFETCH = 64                                  # per-trial files read ahead, in parallel
SWEEP_AFTER_S = 3600.0                         # temp files and uploads older: a crash's


class CompactionLost(StoreError):
    """Another compaction published this generation first; nothing was changed."""


def listing(store, table: str) -> tuple[list[tuple[int, str]], dict[str, list[str]]]:
    """([(gen, path)] of compact files, {trial_id: [part paths]}) from one recursive listing."""
    folder = store.path(table)
    compacts, parts = [], {}
    for rel in store.backend.walk(folder):
        if not rel.endswith(".parquet") or any(hidden(p) for p in rel.split("/")):
            continue
        if "/" not in rel and (m := COMPACT.fullmatch(rel)):
            compacts.append((int(m[1]), f"{folder}/{rel}"))
        elif rel.count("/") == 1:
            parts.setdefault(rel.split("/")[0], []).append(f"{folder}/{rel}")
    return sorted(compacts), {t: sorted(p) for t, p in parts.items()}


def covered(store, path: str) -> set[str]:
    """The trials a compact file says it holds, from its footer."""
    return set(json.loads(store.parquet_footer(path)[b"vaestudy"])["trials"])


def table_files(store, table: str) -> list[str]:
    """The files holding each row of `table` once: the latest compact file and the per-trial
    files of trials it does not hold."""
    compacts, parts = listing(store, table)
    if not compacts:
        return [p for t in sorted(parts) for p in parts[t]]
    latest = compacts[-1][1]
    held = covered(store, latest)
    return [latest] + [p for t in sorted(parts) if t not in held for p in parts[t]]


# ---- writing -----------------------------------------------------------------------

def compact(store, grace_s: float = 5.0, log=print) -> int:
    """Merge every finished trial into one file per table; returns how many trials were new.
    The caller holds the study's lease (the runner, `vaestudy compact`)."""
    store.backend.sweep(store.base, SWEEP_AFTER_S)
    return apply(store, plan(store), grace_s)


def plan(store) -> dict[str, tuple]:
    """Per table: (compact files, trials held, new trials, their files, leftover files)."""
    rows, _ = store.trial_states()
    finished = {t for t, r in rows.items() if r.get("state") in FINISHED}
    plans = {}
    for table in TABLES:
        compacts, parts = listing(store, table)
        held = covered(store, compacts[-1][1]) if compacts else set()
        new = sorted(t for t in finished - held if t in parts)
        leftover = [p for t in held & set(parts) for p in parts[t]]   # a crash after publish
        if new or leftover:
            plans[table] = (compacts, held, new, parts, leftover)
    return plans


def apply(store, plans: dict[str, tuple], grace_s: float) -> int:
    """Publish each table's new generation, then (after `grace_s`) delete what it replaced;
    a failure, or a generation another compaction published first, deletes nothing."""
    for table, (compacts, held, new, parts, _) in plans.items():
        if new:
            write_generation(store, table, compacts, held, new, parts)
    if plans:
        time.sleep(grace_s)                       # readers that listed the old files
    for table, (compacts, _, new, parts, leftover) in plans.items():
        old = [p for _, p in compacts] if new else [p for _, p in compacts[:-1]]
        store.delete_many(old + [p for t in new for p in parts[t]] + leftover)
    return max((len(p[2]) for p in plans.values()), default=0)


def write_generation(store, table, compacts, held, new, parts) -> None:
    """Build, validate and publish generation gen+1 of `table` (CompactionLost if taken)."""
    gen = compacts[-1][0] + 1 if compacts else 1
    final = store.path(table, compact_name(gen))
    scratch = store.backend.scratch(final)
    try:
        trials = sorted(held | set(new))
        old = _old_trials(store, compacts[-1][1]) if compacts else iter(())
        merged = heapq.merge(old, _new_trials(store, table, new, parts), key=lambda kv: kv[0])
        counts = _write(scratch, table, gen, trials, merged)
        validate(scratch, trials, counts)
    except FileNotFoundError as e:                # merged and deleted by another compaction
        _remove(scratch)
        raise CompactionLost(f"compaction: {e.filename or e} was merged by another compaction "
                             "meanwhile; this one changed nothing") from None
    except BaseException:
        _remove(scratch)                          # a local path on every backend
        raise
    if not store.backend.publish(scratch, final):
        raise CompactionLost(f"compaction: {store.uri(table, compact_name(gen))} was published "
                             "by another compaction first; this one changed nothing")


def _write(scratch: str, table: str, gen: int, trials: list[str],
           merged: Iterator[tuple[str, pa.Table]]) -> Counter:
    """The merged rows into `scratch`, row groups of whole trials; rows written per trial."""
    info = {"format_version": FORMAT_VERSION, "gen": gen, "trials": trials}
    schema = SCHEMAS[table].with_metadata({"vaestudy": json.dumps(info),
                                           FORMAT_KEY: str(FORMAT_VERSION).encode()})
    counts: Counter = Counter()
    with pq.ParquetWriter(scratch, schema, compression="zstd") as writer:
        batch, n = [], 0
        for tid, t in merged:
            counts[tid] += t.num_rows
            batch.append(t)
            n += t.num_rows
            if n >= GROUP_ROWS[table]:
                writer.write_table(pa.concat_tables(batch), row_group_size=n)
                batch, n = [], 0
        if batch:
            writer.write_table(pa.concat_tables(batch), row_group_size=n)
    return counts


def validate(scratch: str, trials: list[str], counts: Counter) -> None:
    """The built file read back: its footer names exactly the planned trials, each of which
    it holds, with the rows that were read for it and no others."""
    pf = pq.ParquetFile(scratch)
    listed = json.loads(pf.schema_arrow.metadata[b"vaestudy"])["trials"]
    got = Counter(pf.read(columns=["trial_id"]).column("trial_id").to_pylist())
    missing = [t for t in trials if got[t] == 0]
    if listed != trials or got != counts or missing:
        raise StoreError(f"compaction: the new file does not hold what was read (trials "
                         f"missing: {missing[:5]}, rows {sum(got.values())} of "
                         f"{sum(counts.values())}); not published")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _old_trials(store, path: str) -> Iterator[tuple[str, pa.Table]]:
    """(trial_id, rows) of a compact file, in its order, a row group at a time."""
    with store.backend.open_input_file(path) as f:
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
        t = pa.concat_tables([conform(store.read_parquet(p), table) for p in parts[tid]])
        frame = pl.from_arrow(t)
        if table == "trials":                     # the row written last wins, as in the loader
            frame = frame.sort("written_at", nulls_last=False)
        frame = frame.unique(KEYS[table], keep="last", maintain_order=True).sort(KEYS[table])
        return frame.to_arrow().cast(SCHEMAS[table])

    with ThreadPoolExecutor(8) as pool:
        for i in range(0, len(new), PREFETCH):
            chunk = new[i:i + PREFETCH]
            yield from zip(chunk, pool.map(read, chunk))


def conform(t: pa.Table, table: str) -> pa.Table:
    """A file's rows in the store's schema: columns it lacks (an older file) as nulls."""
    schema = SCHEMAS[table]
    cols = [t.column(f.name).cast(f.type) if f.name in t.column_names
            else pa.nulls(t.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)
