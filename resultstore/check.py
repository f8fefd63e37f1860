"""Finding, and repairing, rows that a damaged compact file or a crash hides or duplicates.

`vaestudy check DIR/STUDY [--repair]` reads every table's files and reports:

    hidden      the latest compact file lists a trial whose rows it does not hold (a
                compaction of an earlier version that published a short file): readers
                skip that trial's own files, so its rows are invisible
    lost        ... and neither its own files nor an older generation hold them
    shadowed    per-trial files of trials the compact file holds (a crash between publish
                and delete): harmless to readers, removed by a repair
    contained   segments inside another segment of the same trial (an interrupted merge)
    temp        temp files and incomplete multipart uploads older than an hour

`--repair` writes a new generation holding every row it can find (the latest
generation's real trials, the hidden trials' own files, else their rows in older
generations), validated and published like any compaction, then removes what is
shadowed, contained or temporary. Nothing is deleted before the new generation is
published, and nothing that holds a row no other file holds. It works on studies of
every format (those without compact files only get the per-trial checks).
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from resultstore import compact as compaction
from resultstore.format import PART, TABLES, compact_name
from resultstore.uri import StoreError

TEMP_AGE_S = 3600.0


def check(store, repair: bool = False, log=print) -> dict[str, int]:
    """Counts of each finding over all tables; with `repair`, also fixed."""
    found = Counter()
    for table in TABLES:
        found += _table(store, table, repair, log)
    for path in (store.backend.sweep(store.base, TEMP_AGE_S) if repair else []):
        log(f"removed {path}")
        found["temp"] += 1
    return dict(found)


def _table(store, table: str, repair: bool, log) -> Counter:
    compacts, parts = compaction.listing(store, table)
    found, hidden, shadowed = Counter(), {}, []
    if compacts:
        listed = compaction.covered(store, compacts[-1][1])
        held = _held(store, compacts[-1][1])
        for t in sorted(listed - held):
            hidden[t] = parts.get(t) or _in_older(store, compacts[:-1], t)
            found["hidden" if hidden[t] else "lost"] += 1
            log(f"{table}: trial {t} is listed by {compact_name(compacts[-1][0])} but has no "
                f"row there; " + ("its rows are in " + ", ".join(hidden[t][:2])
                                  if hidden[t] else "no file holds its rows"))
        shadowed = [p for t in sorted(held & set(parts)) for p in parts[t]]
        found["shadowed"] += len(shadowed)
    contained = [p for t, ps in parts.items() if t not in hidden for p in _contained(ps)]
    found["contained"] += len(contained)
    if repair and (hidden or shadowed or contained):
        _repair(store, table, compacts, hidden, shadowed + contained, log)
    return found


def _held(store, path: str) -> set[str]:
    """The trials a compact file really holds rows of."""
    t = store.read_parquet(path, columns=["trial_id"], whole=False)
    return set(t.column("trial_id").unique().to_pylist())


def _in_older(store, compacts, trial_id: str) -> list[str]:
    for _, path in reversed(compacts):
        if trial_id in _held(store, path):
            return [path]
    return []


def _contained(paths: list[str]) -> list[str]:
    spans = [(int(m[1]), int(m[2]), p) for p in paths
             if (m := PART.search(p.rsplit("/", 1)[-1]))]
    return [a[2] for a in spans
            if any(b[0] <= a[0] and a[1] <= b[1] and b[:2] != a[:2] for b in spans)]


def _repair(store, table, compacts, hidden, remove, log) -> None:
    """A new generation of everything readable, then the redundant files removed."""
    recoverable = {t: ps for t, ps in hidden.items() if ps}
    if compacts and recoverable:
        latest = compacts[-1][1]
        held = _held(store, latest)
        rows = {t: _rows_of(store, table, t, ps) for t, ps in recoverable.items()}
        merged = compaction.heapq.merge(
            compaction._old_trials(store, latest), iter(sorted(rows.items())),
            key=lambda kv: kv[0])
        gen = compacts[-1][0] + 1
        final = store.path(table, compact_name(gen))
        scratch = store.backend.scratch(final)
        trials = sorted(held | set(rows))
        counts = compaction._write(scratch, table, gen, trials, merged)
        compaction.validate(scratch, trials, counts)
        if not store.backend.publish(scratch, final):
            raise StoreError(f"check: {store.uri(table, compact_name(gen))} appeared meanwhile; "
                             "run the check again")
        log(f"{table}: published {compact_name(gen)} with {len(rows)} recovered trials")
        remove = remove + [p for ps in recoverable.values() for p in ps
                           if not compaction.COMPACT.search(p.rsplit("/", 1)[-1])]
    if remove:
        store.delete_many(remove)
        log(f"{table}: removed {len(remove)} redundant files")


def _rows_of(store, table: str, trial_id: str, paths: list[str]) -> pa.Table:
    """A trial's rows from its own files (deduped as compaction does) or an older generation."""
    if compaction.COMPACT.search(paths[0].rsplit("/", 1)[-1]):
        t = store.read_parquet(paths[0], whole=False)
        t = t.filter(pc.equal(t.column("trial_id"), trial_id))
        return compaction.conform(t, table)
    it = compaction._new_trials(store, table, [trial_id], {trial_id: paths})
    return next(it)[1]

