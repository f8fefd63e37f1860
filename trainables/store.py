"""The result store: the one module that owns the schema and writes results.

Layout under ROOT/STUDY/ (ROOT a local path or a pyarrow-filesystem URI such
as s3://bucket/prefix):

    study.json                        spec, format version, the trial list (ids with
                                      their configs), versions, start/end times (study/)
    trials/<trial_id>/part-<first>-<last>.parquet    one row per evaluated epoch
    factors/<trial_id>/part-<first>-<last>.parquet   one row per epoch and factor
    codes/<trial_id>/part-<first>-<last>.parquet     mu, logvar at the last evaluation
    status/<trial_id>.json            running | completed | diverged | failed
    checkpoints/<trial_id>/epoch-<e>.pt
    traversals/<trial_id>.png

How no row is lost or duplicated: at each evaluation and each checkpoint a
trial writes the rows it has buffered since its last write as one segment per
table (each file atomic: temp file then rename), the checkpoint itself after
its segment; so no segment spans a checkpoint. Resuming from the checkpoint of
epoch E first deletes every segment that starts after E (`rollback`), so rows
of epochs the trial is about to redo cannot appear twice, and rows up to E are
on storage because they were written before that checkpoint. A trial stopped
early by a scheduler has every evaluated row on storage already. When a trial
ends, its segments are merged into one file per table (`finish`), so the file
count grows with trials, not with epochs; a merge interrupted half-way leaves
segments that the merged file contains, which `tidy` removes.

Format versions (`FORMAT_VERSION`, in study.json and in each Parquet file's
metadata under `vaestudy.format_version`); readers accept every earlier one:
  1  (nothing recorded) trial ids hash every config value; study.json lists ids only.
  2  trial ids hash the non-default values (`TrialConfig.canonical`); study.json lists
     each trial as {"id", "config"}, and that list is authoritative on resume.
  3  trials gain `mig`, `sap`, `modularity` (null unless eval.metrics asks for them);
     earlier files read with those columns null.
"""
from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import time
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

FORMAT_VERSION = 3
FORMAT_KEY = b"vaestudy.format_version"
TABLES = ("trials", "factors", "codes")
STATES = ("running", "completed", "diverged", "failed", "stopped")
PART = re.compile(r"part-(\d+)-(\d+)\.parquet$")
CKPT = re.compile(r"epoch-(\d+)\.pt$")

f64, i64, s = pa.float64(), pa.int64(), pa.string()
SCHEMAS = {
    "trials": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("status", s), ("dataset", s),
        ("noise", s), ("beta", f64), ("sigma2", f64), ("equivalent_sigma2", f64),
        ("latent_dim", i64), ("seed", i64), ("evlb", f64), ("recon_mse", f64),
        ("kl_post_prior", f64), ("mi_xz", f64), ("kl_qz_pz", f64), ("kl_qstar_pz", f64),
        ("n_used_factors", i64), ("n_normal_variance_factors", i64), ("train_loss", f64),
        ("noise_pi", pa.list_(f64)), ("noise_sigma2_k", pa.list_(f64)),
        ("eval_points", i64), ("used_threshold", f64), ("var_floor", f64),
        ("true_factors", i64), ("config", s), ("code_version", s), ("host", s), ("node", s),
        ("wall_time", f64), ("written_at", pa.timestamp("ms", tz="UTC")),
        ("mig", f64), ("sap", f64), ("modularity", f64),
    ]),
    "factors": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("factor", i64), ("mi", f64),
        ("post_var", f64), ("qstar_var", f64), ("used", pa.bool_()),
    ]),
    "codes": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("point", i64), ("index", i64),
        ("mu", pa.list_(pa.float32())), ("logvar", pa.list_(pa.float32())),
        ("truth", pa.list_(pa.float32())),
    ]),
}


class StoreError(RuntimeError):
    """The results storage cannot be used (unknown scheme, unwritable, ...)."""


def check_format(version: Any, where: str) -> int:
    """The format version of a file or study this code can read; one clear error otherwise."""
    if isinstance(version, bytes):
        version = version.decode()
    try:
        v = int(version)
    except (TypeError, ValueError):
        v = -1
    if not 1 <= v <= FORMAT_VERSION:
        raise StoreError(f"{where}: results format {version!r} is not one this vaestudy reads "
                         f"(1 to {FORMAT_VERSION}); a newer vaestudy wrote it: upgrade "
                         "(pip install -U vaestudy)")
    return v


def recorded_trials(meta: dict) -> list[dict]:
    """study.json's trial list as [{"id": ..., "config": ... or None}], for every format."""
    return [{"id": t, "config": None} if isinstance(t, str) else
            {"id": t["id"], "config": t.get("config")} for t in meta.get("trials", [])]


SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "abfs", "abfss")


def check_uri(root: str) -> None:
    """Refuse an unknown scheme without touching any filesystem or network."""
    if "://" in root and root.split("://", 1)[0] not in SCHEMES:
        raise StoreError(f"storage: unknown scheme {root.split('://', 1)[0]!r} in {root!r}; "
                         "allowed: a local path, file://, s3://, gs://, hdfs://, abfs://")


def open_root(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a local path or a URI pyarrow understands."""
    check_uri(root)
    if "://" not in root:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))
    try:
        return pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"storage: cannot open {root!r}: {e}") from None


@lru_cache(maxsize=1)
def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        v = version("vaestudy")
    except PackageNotFoundError:
        v = "0+unknown"
    try:
        here = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        if rev.returncode == 0 and rev.stdout.strip():
            v += "+g" + rev.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return v


class ResultStore:
    def __init__(self, root: str, study: str):
        self.root, self.study = root, study
        self.fs, base = open_root(root)
        self.base = f"{base.rstrip('/')}/{study}"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    # ---- paths -------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def uri(self, *parts: str) -> str:
        """A path Polars and users can open (local path or URI)."""
        p = self.path(*parts)
        return p if self.local else f"{self.root.split('://')[0]}://{p}"

    def glob(self, table: str) -> str:
        return self.uri(table, "**", "*.parquet")

    # ---- low-level atomic IO ---------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic: readers see the old file or the whole new one, never a part."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if not self.local:                       # object stores publish a PUT atomically
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def listdir(self, path: str) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(i.path.rsplit("/", 1)[-1] for i in info)

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def read_meta(self) -> dict | None:
        """study.json (None for a `vaestudy train` study), its format checked."""
        path = self.path("study.json")
        if not self.exists(path):
            return None
        meta = self.read_json(path)
        meta["format_version"] = check_format(meta.get("format_version", 1), self.uri("study.json"))
        return meta

    def check_writable(self) -> None:
        """Fail before any trial starts when the storage cannot take a file."""
        probe = self.path(".write-probe-" + uuid.uuid4().hex[:8])
        try:
            self.write_bytes(probe, b"x" * 4096)
            self.delete(probe)
        except OSError as e:
            raise StoreError(f"storage: cannot write to {self.uri()}: {e}") from None

    # ---- segments ----------------------------------------------------------------
    def write_segment(self, trial_id: str, rows: dict[str, list[dict]], first: int, last: int):
        for table, table_rows in rows.items():
            if table_rows:
                t = pa.Table.from_pylist(table_rows, schema=SCHEMAS[table])
                self._write_table(table, trial_id, t, first, last)

    def _write_table(self, table: str, trial_id: str, t: pa.Table, first: int, last: int):
        t = t.replace_schema_metadata({**(t.schema.metadata or {}),
                                       FORMAT_KEY: str(FORMAT_VERSION).encode()})
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        self.write_bytes(self.path(table, trial_id, f"part-{first:06d}-{last:06d}.parquet"),
                         buf.getvalue())

    def parts(self, table: str, trial_id: str) -> list[tuple[int, int, str]]:
        out = []
        for name in self.listdir(self.path(table, trial_id)):
            if m := PART.fullmatch(name):
                out.append((int(m[1]), int(m[2]), self.path(table, trial_id, name)))
        return sorted(out)

    def rollback(self, trial_id: str, epoch: int) -> None:
        """Delete rows of epochs after `epoch`: the resumed trial recomputes them."""
        for table in TABLES:
            for first, _, path in self.parts(table, trial_id):
                if first > epoch:
                    self.delete(path)
        self.tidy(trial_id)

    def tidy(self, trial_id: str) -> None:
        """Remove segments contained in another file (an interrupted merge) and temp files."""
        for table in TABLES:
            parts = self.parts(table, trial_id)
            for a in parts:
                if any(b is not a and b[0] <= a[0] and a[1] <= b[1] and (b[0], b[1]) != (a[0], a[1])
                       for b in parts):
                    self.delete(a[2])
            for name in self.listdir(self.path(table, trial_id)):
                if ".tmp-" in name:
                    self.delete(self.path(table, trial_id, name))

    def read_trial(self, table: str, trial_id: str) -> pa.Table | None:
        parts = self.parts(table, trial_id)
        return self._read(parts) if parts else None

    def _read(self, parts: list[tuple[int, int, str]]) -> pa.Table:
        return pa.concat_tables([self._read_file(p) for *_, p in parts], promote_options="default")

    def _read_file(self, path: str) -> pa.Table:
        t = pq.read_table(self.fs.open_input_file(path))
        check_format((t.schema.metadata or {}).get(FORMAT_KEY, 1), path)
        return t.replace_schema_metadata(None)

    def finish(self, trial_id: str, state: str, error: str | None = None, **extra) -> None:
        """Merge the trial's segments, stamp its last row with `state`, record the state."""
        for table in TABLES:
            parts = self.parts(table, trial_id)
            if not parts:
                continue
            t = self._read(parts)
            if table == "trials":
                last = max(t.column("epoch").to_pylist())
                status = [state if e == last else "running" for e in t.column("epoch").to_pylist()]
                t = t.set_column(t.schema.get_field_index("status"), "status",
                                 pa.array(status, pa.string()))
            first, last = parts[0][0], parts[-1][1]
            self._write_table(table, trial_id, t.sort_by("epoch"), first, last)
            for a, b, path in parts:
                if (a, b) != (first, last):
                    self.delete(path)
        self.set_status(trial_id, state, error=error, **extra)

    # ---- trial status ------------------------------------------------------------
    def set_status(self, trial_id: str, state: str, **fields) -> None:
        assert state in STATES, state
        path = self.path("status", f"{trial_id}.json")
        old = self.read_json(path) if self.exists(path) else {}
        new = {**old, **{k: v for k, v in fields.items() if v is not None},
               "trial_id": trial_id, "state": state, "updated": time.time(),
               "host": socket.gethostname()}
        if state in ("running",):
            new.pop("error", None)
        self.write_json(path, new)

    def status(self, trial_id: str) -> dict | None:
        path = self.path("status", f"{trial_id}.json")
        return self.read_json(path) if self.exists(path) else None

    def all_status(self) -> list[dict]:
        out = []
        for name in self.listdir(self.path("status")):
            if name.endswith(".json"):
                out.append(self.read_json(self.path("status", name)))
        return out

    # ---- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, trial_id: str, epoch: int, state: dict, keep: int) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        self.write_bytes(self.path("checkpoints", trial_id, f"epoch-{epoch:06d}.pt"), buf.getvalue())
        for e, path in self.checkpoints(trial_id)[:-keep]:
            self.delete(path)

    def checkpoints(self, trial_id: str) -> list[tuple[int, str]]:
        out = []
        for name in self.listdir(self.path("checkpoints", trial_id)):
            if m := CKPT.fullmatch(name):
                out.append((int(m[1]), self.path("checkpoints", trial_id, name)))
        return sorted(out)

    def load_checkpoint(self, trial_id: str, epoch: int | None = None) -> dict | None:
        """The latest (or the given epoch's) checkpoint, loaded without unpickling objects."""
        import torch

        for e, path in reversed(self.checkpoints(trial_id)):
            if epoch is not None and e != epoch:
                continue
            try:
                return torch.load(io.BytesIO(self.read_bytes(path)), weights_only=True,
                                  map_location="cpu")
            except (RuntimeError, EOFError, OSError) as err:   # corrupt: take the previous
                print(f"[store] skipping unreadable checkpoint {path}: {err}")
        return None
