"""One trial's writes: `store.trial(trial_id)` -> TrialHandle.

    begin(**status)                  its status file says `running`
    resume() -> state | None         its latest readable checkpoint; rows after it rolled back
    append(rows, first, last)        a segment per table (epochs first..last)
    checkpoint(epoch, state, keep)   a checkpoint, keeping the newest `keep`
    finish(state, ...)               its end: last row stamped, segments merged, status set
    keep_final(mode, state)          what a completed trial keeps of its checkpoints

How no row is lost or duplicated: at each evaluation and each checkpoint a
trial writes the rows it has buffered since its last write as one segment per
table (each file atomic), the checkpoint itself after its segment, so no segment
spans a checkpoint. `resume` from the checkpoint of epoch E first deletes every
segment that starts after E, so rows of epochs the trial is about to redo cannot
appear twice, and rows up to E are on storage because they were written before
that checkpoint. A trial stopped early by a scheduler has every evaluated row on
storage already. When a trial ends, its segments are merged into one file per
table (on local disk; on object stores only its last segment is restamped), and a
merge interrupted half-way leaves segments that the merged file contains, which
`tidy` removes.

Fencing: a trial started by a driver holding lease generation G (`store.fence`)
checks, before each write and each delete, that no generation G+1 exists
(resultstore/lease.py: generations only grow). Where one does, a newer driver took the
study over: the trial raises `FencedOut` and writes and deletes nothing more, so
two attempts of a trial never delete each other's files. The check is one HEAD on
an object store (one per segment group, checkpoint, rollback and end).

Faults are told apart: a checkpoint that cannot be deserialized (truncated,
corrupt) is skipped for the one before it; a read that fails for I/O reasons is
retried by the backend and then raised, so the attempt fails and Tune retries it;
nothing is recomputed silently.
"""
from __future__ import annotations

import io
import pickle

import pyarrow as pa

from resultstore.format import (CKPT, FINAL_CKPT, LEASE_DIR, PART, SCHEMAS, TABLES, checkpoint_name,
                            lease_name, part_name)
from resultstore.uri import StoreError


class FencedOut(StoreError):
    """A newer driver holds the study: this attempt must stop writing."""


class CorruptCheckpoint(StoreError):
    """A checkpoint that exists but cannot be deserialized."""


class TrialHandle:
    def __init__(self, store, trial_id: str):
        self.store, self.id = store, trial_id
        self._last: tuple[int, int, pa.Table] | None = None     # its last trials segment

    # ---- fencing -------------------------------------------------------------------
    def check_fence(self) -> None:
        gen = self.store.fence
        if gen is None:
            return
        # one HEAD on S3 (`exists` would also list the prefix when there is no file)
        if self.store.backend.mtime(self.store.path(LEASE_DIR, lease_name(gen + 1))) is not None:
            raise FencedOut(f"[{self.id}] study {self.store.study!r} was taken over by a newer "
                            f"driver (lease generation {gen + 1}; this attempt was started "
                            f"under {gen}): stopping without writing or deleting")

    # ---- status ----------------------------------------------------------------------
    def status(self) -> dict | None:
        return self.store.status(self.id)

    def set_status(self, state: str, **fields) -> None:
        self.check_fence()
        self.store.set_status(self.id, state, **fields)

    def begin(self, **fields) -> None:
        self.set_status("running", **fields)

    # ---- segments ----------------------------------------------------------------
    def append(self, rows: dict[str, list[dict]], first: int, last: int,
               checkpoint: tuple[int, dict | bytes, int] | None = None) -> None:
        """Rows of epochs first..last, one segment per table that has any; then, where given,
        the checkpoint (epoch, state, keep) taken after them: one write under one fence
        check, the segment before the checkpoint (the no-loss order above)."""
        self.check_fence()
        for table, table_rows in rows.items():
            if table_rows:
                t = pa.Table.from_pylist(table_rows, schema=SCHEMAS[table])
                self._write(table, t, first, last)
                if table == "trials":                  # `finish` stamps it without a read
                    self._last = (first, last, t)
        if checkpoint is not None:
            self._checkpoint(*checkpoint)

    def _write(self, table: str, t: pa.Table, first: int, last: int) -> None:
        self.store.write_parquet(self.store.path(table, self.id, part_name(first, last)), t)

    def parts(self, table: str) -> list[tuple[int, int, str]]:
        out = []
        for name in self.store.listdir(self.store.path(table, self.id)):
            if m := PART.fullmatch(name):
                out.append((int(m[1]), int(m[2]), self.store.path(table, self.id, name)))
        return sorted(out)

    def read(self, table: str) -> pa.Table | None:
        parts = self.parts(table)
        return self._read(parts) if parts else None

    def _read(self, parts: list[tuple[int, int, str]]) -> pa.Table:
        return pa.concat_tables([self.store.read_parquet(p) for *_, p in parts],
                                promote_options="default")

    def rollback(self, epoch: int) -> None:
        """Delete rows of epochs after `epoch`: the resumed trial recomputes them."""
        self.check_fence()
        for table in TABLES:
            for first, _, path in self.parts(table):
                if first > epoch:
                    self.store.delete(path)
        self.tidy()

    def tidy(self) -> None:
        """Remove segments contained in another file (an interrupted merge) and temp files."""
        for table in TABLES:
            parts = self.parts(table)
            for a in parts:
                if any(b is not a and b[0] <= a[0] and a[1] <= b[1] and b[:2] != a[:2]
                       for b in parts):
                    self.store.delete(a[2])
            for name in self.store.listdir(self.store.path(table, self.id)):
                if ".tmp-" in name:
                    self.store.delete(self.store.path(table, self.id, name))

    def traversal(self, png: bytes) -> None:
        """The traversal montage of its last evaluation."""
        self.check_fence()
        self.store.write_bytes(self.store.path("traversals", f"{self.id}.png"), png)

    # ---- the end -------------------------------------------------------------------
    def finish(self, state: str, error: str | None = None, **extra) -> None:
        """Stamp the trial's last row with `state` and record the state. On local disk its
        segments are merged into one file per table; on object stores, where that costs a
        read and a delete per segment, only the last trials segment is rewritten (compaction
        merges them later)."""
        self.check_fence()
        if self.store.local:
            self._merge(state)
        else:
            self._stamp_last(state)
        self.store.set_status(self.id, state, error=error, **extra)

    def _stamp_last(self, state: str) -> None:
        if self._last is not None:
            first, last, t = self._last
        else:
            parts = self.parts("trials")
            if not parts:
                return
            first, last, path = parts[-1]
            t = self.store.read_parquet(path)
        self._write("trials", stamp(t, state), first, last)

    def _merge(self, state: str) -> None:
        for table in TABLES:
            parts = self.parts(table)
            if not parts:
                continue
            t = self._read(parts)
            if table == "trials":
                t = stamp(t, state)
            first, last = parts[0][0], parts[-1][1]
            self._write(table, t.sort_by("epoch"), first, last)
            for a, b, path in parts:
                if (a, b) != (first, last):
                    self.store.delete(path)

    # ---- checkpoints ---------------------------------------------------------------
    def checkpoint(self, epoch: int, state: dict | bytes, keep: int) -> None:
        """Write a checkpoint (a state dict, or `checkpoint_bytes` of one), keep `keep`."""
        self.check_fence()
        self._checkpoint(epoch, state, keep)

    def _checkpoint(self, epoch: int, state: dict | bytes, keep: int) -> None:
        data = state if isinstance(state, bytes) else checkpoint_bytes(state)
        self.store.write_bytes(self.store.path("checkpoints", self.id, checkpoint_name(epoch)),
                               data)
        for _, path in self.checkpoints()[:-keep]:
            self.store.delete(path)

    def checkpoints(self) -> list[tuple[int, str]]:
        out = []
        for name in self.store.listdir(self.store.path("checkpoints", self.id)):
            if m := CKPT.fullmatch(name):
                out.append((int(m[1]), self.store.path("checkpoints", self.id, name)))
        return sorted(out)

    def keep_final(self, mode: str, state: dict) -> None:
        """A completed trial's checkpoints: `weights` -> final.pt with the model's weights and
        no optimizer state, `full` -> its last checkpoint as it is, `none` -> nothing.
        final.pt is written before the epoch checkpoints go, so a crash keeps one or the other."""
        self.check_fence()
        ckpts = self.checkpoints()
        if mode == "full":
            ckpts = ckpts[:-1]
        elif mode == "weights":
            weights = {k: state[k] for k in ("epoch", "wall", "vae", "trial_config")}
            self.store.write_bytes(self.store.path("checkpoints", self.id, FINAL_CKPT),
                                   checkpoint_bytes(weights))
        for _, path in ckpts:
            self.store.delete(path)

    def load_checkpoint(self, epoch: int | None = None) -> dict | None:
        """The latest (or the given epoch's) readable checkpoint; a completed trial's final
        weights (final.pt, no optimizer state) when that is all. A checkpoint that cannot be
        deserialized is skipped for the one before; an I/O failure is raised."""
        found = self.checkpoints()
        if not found:
            raw = self.store.read_optional(self.store.path("checkpoints", self.id, FINAL_CKPT))
            if raw is None:
                return None
            state = load_bytes(raw, FINAL_CKPT)
            return state if epoch is None or state["epoch"] == epoch else None
        for e, path in reversed(found):
            if epoch is not None and e != epoch:
                continue
            try:
                return load_bytes(self.store.read_bytes(path), path)   # I/O errors propagate
            except CorruptCheckpoint as err:
                print(f"[store] skipping checkpoint {path}: {err}", flush=True)
        return None

    def resume(self) -> dict | None:
        """The state to continue from (None: start afresh), rows after it rolled back."""
        state = self.load_checkpoint()
        self.rollback(state["epoch"] if state else 0)
        return state


def checkpoint_bytes(state: dict) -> bytes:
    """A state dict as torch.save bytes: taken on the training thread, so the copy is of this
    epoch's weights; the upload can then happen on any thread."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def load_bytes(raw: bytes, where: str) -> dict:
    """A checkpoint's state, loaded without unpickling objects; CorruptCheckpoint where it is
    truncated, corrupt, or holds objects weights_only refuses."""
    import torch

    try:
        return torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, OSError) as err:
        first = str(err).splitlines()[0][:200] if str(err) else ""
        raise CorruptCheckpoint(f"cannot load it ({type(err).__name__}: {first})") from None


def stamp(t: pa.Table, state: str) -> pa.Table:
    """The trials table with its last epoch's `status` set to `state`."""
    epochs = t.column("epoch").to_pylist()
    status = [state if e == max(epochs) else "running" for e in epochs]
    return t.set_column(t.schema.get_field_index("status"), "status",
                        pa.array(status, pa.string()))
