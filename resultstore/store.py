"""A study's storage: study.json, status files, the driver's status table, Parquet files.

`ResultStore(root, study)` picks the backend once from the root (resultstore/backend.py)
and is the one object the rest of the project reads and writes results through.
What belongs to one trial (segments, checkpoints, its end) goes through its
handle, `store.trial(trial_id)` (resultstore/trial.py); compaction, the lease and the
repair check have modules of their own beside this one.
"""
from __future__ import annotations

import io
import json
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from resultstore import uri as uris
from resultstore.backend import StorageIOError, open_backend
from resultstore.format import (FORMAT_KEY, FORMAT_VERSION, READ_THREADS, STALE_TABLE_S, STATES,
                               STATUS_SCHEMA, STATUS_TABLE, check_format, status_row)
from resultstore.uri import StoreError


class ResultStore:
    def __init__(self, root: str, study: str, fence: int | None = None):
        """fence: the lease generation the driver that started this process held; trials
        write only while no newer one exists (resultstore/trial.py)."""
        self.root, self.study, self.fence = uris.resolve_root(root), study, fence
        self.backend, base = open_backend(self.root)
        self.base = f"{base}/{study}"
        self.local = self.backend.local
        self.storage_options = uris.polars_options(self.root)
        self._status: dict[str, dict] = {}            # status files this process wrote

    def trial(self, trial_id: str):
        """The handle through which one trial writes (resultstore/trial.py)."""
        from resultstore.trial import TrialHandle
        return TrialHandle(self, trial_id)

    # ---- paths -------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def uri(self, *parts: str) -> str:
        """Where users find it: a local path, or a URI with the server's query (no secrets)."""
        p = self.path(*parts)
        return p if self.local else \
            f"{self.root.split('://')[0]}://{p}{uris.split_query(self.root)[1]}"

    def glob(self, table: str) -> str:
        """A glob Polars scans, with `storage_options` (a plain URI: Polars takes no query)."""
        p = self.path(table, "**", "*.parquet")
        return p if self.local else f"{self.root.split('://')[0]}://{p}"

    # ---- bytes (the backend's operations, on this study's paths) ------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        self.backend.write(path, data)

    def read_bytes(self, path: str) -> bytes:
        return self.backend.read(path)

    def read_optional(self, path: str) -> bytes | None:
        return self.backend.read_optional(path)

    def exists(self, path: str) -> bool:
        return self.backend.exists(path)

    def listdir(self, path: str) -> list[str]:
        return self.backend.list(path)

    def delete(self, path: str) -> None:
        self.backend.delete(path)

    def delete_many(self, paths: list[str]) -> None:
        self.backend.delete_many(paths)

    def delete_dir(self, path: str) -> None:
        self.backend.delete_dir(path)

    def read_many(self, paths: list[str], read) -> list:
        """read(path) for each path on a thread pool: object stores answer in parallel."""
        if len(paths) < 4:
            return [read(p) for p in paths]
        with ThreadPoolExecutor(min(READ_THREADS, len(paths))) as pool:
            return list(pool.map(read, paths))

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def read_meta(self) -> dict | None:
        """study.json (None for a `vaestudy train` study), its format checked."""
        meta = self.read_optional(self.path("study.json"))
        if meta is None:
            return None
        meta = json.loads(meta)
        meta["format_version"] = check_format(meta.get("format_version", 1), self.uri("study.json"))
        return meta

    def check_writable(self) -> None:
        """Fail before any trial starts when the storage cannot take a file: a probe written
        and removed (on S3 a LIST and a probe PUT/DELETE; no directory marker is left)."""
        probe = self.path(".write-probe-" + uuid.uuid4().hex[:8])
        try:
            self.backend.list(self.base)
            self.backend.write(probe, b"x" * 64)
            self.backend.delete(probe)
        except OSError as e:
            raise StoreError(f"storage: cannot write to {self.uri()}: {why(e)}") from None

    # ---- Parquet files ---------------------------------------------------------------
    def write_parquet(self, path: str, t: pa.Table) -> None:
        """A table as one Parquet file stamped with the format version (atomic)."""
        t = t.replace_schema_metadata({**(t.schema.metadata or {}),
                                       FORMAT_KEY: str(FORMAT_VERSION).encode()})
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        self.write_bytes(path, buf.getvalue())

    def read_parquet(self, path: str, columns: list[str] | None = None,
                     whole: bool = True) -> pa.Table:
        """A file's rows (format checked, metadata dropped). `whole`: one GET of all of it
        (small files: on S3 a HEAD and ranged GETs cost more); else read by ranges, only
        `columns` (large compact files)."""
        src = (pa.BufferReader(self.read_bytes(path)) if whole
               else self.backend.open_input_file(path))
        with src as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow                 # rebuilt by pyarrow on each access
            check_format((schema.metadata or {}).get(FORMAT_KEY, 1), path)
            t = pf.read(columns=[c for c in columns if c in schema.names]
                        if columns is not None else None)
        return t.replace_schema_metadata(None)

    def parquet_footer(self, path: str) -> dict:
        """A file's key-value metadata (format checked), read by range."""
        with self.backend.open_input_file(path) as f:
            meta = pq.read_metadata(f).metadata or {}
        check_format(meta.get(FORMAT_KEY, 1), path)
        return meta

    # ---- trial status files ------------------------------------------------------
    def set_status(self, trial_id: str, state: str, **fields) -> None:
        assert state in STATES, state
        old = self._status.get(trial_id) or self.status(trial_id) or {}
        new = {**old, **{k: v for k, v in fields.items() if v is not None},
               "trial_id": trial_id, "state": state, "updated": time.time(),
               "host": socket.gethostname()}
        if state == "running":
            new.pop("error", None)
        self.write_json(self.path("status", f"{trial_id}.json"), new)
        self._status[trial_id] = new

    def status(self, trial_id: str) -> dict | None:
        """The trial's status file, or None: one GET, no existence check first."""
        raw = self.read_optional(self.path("status", f"{trial_id}.json"))
        return None if raw is None else json.loads(raw)

    def all_status(self) -> list[dict]:
        """Every trial's status file, read in parallel (the source of truth, one GET each)."""
        names = [n for n in self.listdir(self.path("status"))
                 if n.endswith(".json") and not n.startswith(".")]
        got = self.read_many([self.path("status", n) for n in names], self._json_or_none)
        return [g for g in got if g is not None]

    def status_many(self, trial_ids: list[str]) -> dict[str, dict]:
        """{trial_id: status} of those with a status file, read in parallel."""
        got = self.read_many([self.path("status", f"{t}.json") for t in trial_ids],
                             self._json_or_none)
        return {t: s for t, s in zip(trial_ids, got) if s is not None}

    def _json_or_none(self, path: str) -> dict | None:
        try:
            return self.read_json(path)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    # ---- the driver's status table -------------------------------------------------
    def write_status_table(self, rows: list[dict], final: bool, **meta) -> None:
        """One small Parquet file; `final` when the driver has ended (nothing runs)."""
        t = pa.Table.from_pylist(rows, schema=STATUS_SCHEMA)
        info = {"format_version": FORMAT_VERSION, "final": final, "written_at": time.time(), **meta}
        t = t.replace_schema_metadata({"vaestudy": json.dumps(info)})
        buf = io.BytesIO()
        pq.write_table(t, buf, compression="zstd")
        self.write_bytes(self.path(STATUS_TABLE), buf.getvalue())

    def read_status_table(self) -> tuple[list[dict], dict] | None:
        """(rows, metadata) of the status table, or None when there is none."""
        raw = self.read_optional(self.path(STATUS_TABLE))
        if raw is None:
            return None
        try:
            t = pq.read_table(io.BytesIO(raw))
        except pa.ArrowInvalid:
            return None
        return t.to_pylist(), json.loads((t.schema.metadata or {})[b"vaestudy"])

    def trial_states(self, trial_ids: list[str] | None = None
                     ) -> tuple[dict[str, dict], dict | None]:
        """({trial_id: status row}, the table's metadata or None when read from the files):
        the status table when it is current (one read), else every status file in parallel.
        Current: the driver wrote it when it ended (`final`), or less than STALE_TABLE_S ago
        while it runs."""
        table = self.read_status_table()
        if table is not None:
            rows, meta = table
            age = time.time() - meta.get("written_at", 0)
            if meta.get("final") or age < STALE_TABLE_S:
                return {r["trial_id"]: r for r in rows}, meta
        got = self.status_many(trial_ids) if trial_ids is not None else \
            {st["trial_id"]: st for st in self.all_status()}
        return {t: status_row(st) for t, st in got.items()}, None


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version and, in a git checkout, its commit: stamped on every row."""
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


def why(e: OSError) -> str:
    """A storage error as one line a user can act on."""
    text = " ".join(str(e).split())
    for codes, hint in (
            (("NO_SUCH_BUCKET", "NoSuchBucket"), "the bucket does not exist"),
            (("INVALID_ACCESS_KEY_ID", "InvalidAccessKeyId"),
             "wrong credentials: the access key is unknown"),
            (("SIGNATURE_DOES_NOT_MATCH", "SignatureDoesNotMatch"),
             "wrong credentials: the secret key does not match"),
            (("ACCESS_DENIED", "AccessDenied"), "access denied: these credentials may not use it"),
            (("NETWORK_CONNECTION", "EndpointConnectionError", "Could not connect"),
             "the endpoint is unreachable")):
        if any(c in text for c in codes):
            return f"{hint} ({text[:200]})"
    return text[:300]


__all__ = ["ResultStore", "StoreError", "StorageIOError", "code_version", "why"]
