"""Finished trials read out of a study, and copied into another (`reuse:`, `vaestudy extend`).

    versions(store, ids)             {trial id: code version} of finished trials' rows
    rows(store, ids, table)          {trial id: its rows, each key once}
    copy_trial(src, dst, id, status) its rows, final checkpoint and traversal, then its status

A trial's rows are in its own segments until compaction merges them into the
table's compact file; both are looked in, from one listing per table, and a file
that vanished between listing and reading (the other study's driver compacted
meanwhile) makes it list again, as the loader does. Reading a file checks its
results format (`ResultStore.read_parquet`), so a trial written by a newer
vaestudy is refused in one line rather than copied or kept unread.

A copy is written in the order a trial writes: one segment per table, the final
checkpoint, the traversal, and the status file last. The status is what makes
the copy finished; a copy cut short leaves a trial without a finished status, so
the next run copies it again after clearing what the cut one left (`clear`), and
no row is read twice. The copied rows name the study they are now in (`study`);
everything else (code version, host, times, the stamped last status) is the
origin's, and the status file says where they came from (`reused_from`).
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from resultstore import compact as compaction
from resultstore.format import (CKPT, FINAL_CKPT, FORMAT_KEY, TABLES, check_format, part_name)

LIST_TRIES = 5                     # listings per read, if files vanish (a compaction meanwhile)


def rows(store, ids: list[str], table: str, columns: list[str] | None = None
         ) -> dict[str, pa.Table]:
    """{trial id: its rows of `table`} for those of `ids` that have any, each key once."""
    for attempt in range(LIST_TRIES):
        try:
            return _rows(store, set(ids), table, columns)
        except FileNotFoundError:
            if attempt == LIST_TRIES - 1:
                raise
    raise AssertionError("unreachable")


def _rows(store, ids: set[str], table: str, columns: list[str] | None) -> dict[str, pa.Table]:
    compacts, parts = compaction.listing(store, table)
    own = sorted(t for t in ids if t in parts)
    out: dict[str, pa.Table] = {}
    if compacts:
        held = compaction.covered(store, compacts[-1][1])
        wanted = sorted(ids & held)            # the compact file's copy wins over leftovers
        if wanted:
            out.update(_from_compact(store, compacts[-1][1], wanted, table, columns))
        own = [t for t in own if t not in held]
    got = store.read_many([p for t in own for p in parts[t]],
                          lambda p: store.read_parquet(p, columns=columns))
    by_trial: dict[str, list[pa.Table]] = {}
    for t in got:
        if t.num_rows:
            by_trial.setdefault(t.column("trial_id")[0].as_py(), []).append(t)
    for tid, tables in by_trial.items():
        out[tid] = _once(pa.concat_tables(tables, promote_options="default"), table, columns)
    return out


def _from_compact(store, path: str, ids: list[str], table: str,
                  columns: list[str] | None) -> dict[str, pa.Table]:
    """The trials' rows of a compact file, read by ranges: its row groups hold whole trials
    sorted by id, so the filter skips the groups of other trials by their statistics."""
    want, got = set(ids), []
    with store.backend.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        check_format((pf.schema_arrow.metadata or {}).get(FORMAT_KEY, 1), path)
        meta = pf.metadata
        col = next(j for j in range(meta.num_columns) if meta.schema.column(j).path == "trial_id")
        for i in range(pf.num_row_groups):
            st = meta.row_group(i).column(col).statistics
            if st is not None and st.has_min_max and not any(st.min <= t <= st.max for t in ids):
                continue
            g = pf.read_row_group(i, columns=columns)
            got.append(g.filter(pc.is_in(g.column("trial_id"), pa.array(sorted(want)))))
    t = pa.concat_tables(got) if got else pf.schema_arrow.empty_table()
    t = t.replace_schema_metadata(None)
    frame = pl.from_arrow(t)
    return {tid: _once(g.to_arrow(), table, columns)
            for (tid,), g in frame.partition_by("trial_id", as_dict=True).items()}


def _once(t: pa.Table, table: str, columns: list[str] | None) -> pa.Table:
    """Each key once (a crash between a segment and its merge leaves rows twice); in the
    store's schema when whole rows were read. For trials the row written last wins."""
    if columns is None:
        t = compaction.conform(t, table)
    keys = [k for k in compaction.KEYS[table] if k in t.column_names]
    if len(keys) < len(compaction.KEYS[table]):
        return t
    frame = pl.from_arrow(t)
    if "written_at" in frame.columns:
        frame = frame.sort("written_at", nulls_last=False)
    frame = frame.unique(keys, keep="last", maintain_order=True).sort(keys)
    out = frame.to_arrow()
    return out.cast(t.schema) if columns is None else out


def versions(store, ids: list[str]) -> dict[str, str]:
    """{trial id: the code version on its last row} (its format checked on the way)."""
    got = rows(store, ids, "trials", columns=["trial_id", "epoch", "code_version"])
    out = {}
    for tid, t in got.items():
        last = t.sort_by([("epoch", "descending")]).column("code_version")[0].as_py()
        out[tid] = last or "unknown"
    return out


def clear(dst, trial_id: str) -> None:
    """What a trial left in `dst` (segments, checkpoints, traversal, status) removed, before
    a copy takes its place: its own attempt, or a copy cut short."""
    h = dst.trial(trial_id)
    h.check_fence()
    gone = [p for table in TABLES for *_, p in h.parts(table)]
    gone += [dst.path("checkpoints", trial_id, n)
             for n in dst.listdir(dst.path("checkpoints", trial_id))]
    gone += [dst.path("traversals", f"{trial_id}.png"), dst.path("status", f"{trial_id}.json")]
    dst.delete_many(gone)


def copy_trial(src, dst, trial_id: str, status: dict, tables: dict[str, pa.Table]) -> None:
    """The finished trial `trial_id` of `src` into `dst`; `tables`: its rows (`rows`)."""
    h = dst.trial(trial_id)
    clear(dst, trial_id)
    for table, t in tables.items():
        if t.num_rows == 0:
            continue
        t = t.set_column(t.schema.get_field_index("study"), "study",
                         pa.array([dst.study] * t.num_rows, pa.string()))
        epochs = t.column("epoch").to_pylist()
        h.check_fence()
        dst.write_parquet(dst.path(table, trial_id, part_name(min(epochs), max(epochs))), t)
    ckpt = final_checkpoint(src, trial_id)
    if ckpt is not None:
        h.check_fence()
        dst.write_bytes(dst.path("checkpoints", trial_id, ckpt[0]), ckpt[1])
    png = src.read_optional(src.path("traversals", f"{trial_id}.png"))
    if png is not None:
        h.traversal(png)
    # its pack, if any, was the other study's: a copy belongs to none here
    fields = {k: v for k, v in status.items()
              if k not in ("trial_id", "state", "updated", "host", "pack")}
    h.set_status(status["state"], **fields, reused_from=src.study)


def final_checkpoint(src, trial_id: str) -> tuple[str, bytes] | None:
    """(name, bytes) of what the finished trial kept: final.pt (weights), else its last
    epoch checkpoint (`checkpoint.final: full`), else None (`none`)."""
    names = src.listdir(src.path("checkpoints", trial_id))
    pick = FINAL_CKPT if FINAL_CKPT in names else \
        max((n for n in names if CKPT.fullmatch(n)), default=None)
    if pick is None:
        return None
    return pick, src.read_bytes(src.path("checkpoints", trial_id, pick))


__all__ = ["clear", "copy_trial", "final_checkpoint", "rows", "versions"]
