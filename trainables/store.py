"""The result store: the one module that owns the schema and writes results.

Layout under ROOT/STUDY/ (ROOT a local path or a pyarrow-filesystem URI such
as s3://bucket/prefix):

    study.json                        spec, format version, the trial list (ids with
                                      their configs), versions, start/end times (study/)
    trials/<trial_id>/part-<first>-<last>.parquet    one row per evaluated epoch
    factors/<trial_id>/part-<first>-<last>.parquet   one row per epoch and factor
    codes/<trial_id>/part-<first>-<last>.parquet     mu, logvar at the last evaluation
    status/<trial_id>.json            running | completed | diverged | failed
    status.parquet                    the driver's compact status table (study/tracker.py)
    checkpoints/<trial_id>/epoch-<e>.pt   while a trial runs (checkpoint.keep of them)
    checkpoints/<trial_id>/final.pt   after it completes: weights only (checkpoint.final)
    traversals/<trial_id>.png
    <table>/compact-<gen>.parquet     finished trials of `compact`, sorted, row groups by trial

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

Temp files start with "." (`.name.tmp-XXXX`), so directory readers (pyarrow.dataset,
pandas, DuckDB, Spark) skip them. Compaction (trainables/compact.py) is safe while
readers run; see there.

Format versions (`FORMAT_VERSION`, in study.json and in each Parquet file's
metadata under `vaestudy.format_version`); readers accept every earlier one:
  1  (nothing recorded) trial ids hash every config value; study.json lists ids only.
  2  trial ids hash the non-default values (`TrialConfig.canonical`); study.json lists
     each trial as {"id", "config"}, and that list is authoritative on resume.
  3  trials gain `mig`, `sap`, `modularity` (null unless eval.metrics asks for them);
     earlier files read with those columns null.
  4  trials gain mi_xz_est, kl_qz_pz_est, tc_est (MC estimates beyond the paper's bounds),
     equivalent_sigma2_arith, pi_at_floor and normal_var_tol; a mixture's
     equivalent_sigma2 is precision-weighted. Earlier files read the new columns as null
     (`analysis.load` recomputes what it can).
  5  + compact-<gen>.parquet per table (finished trials; trainables/compact.py),
     status.parquet (the driver's status table), checkpoints/<id>/final.pt (weights
     only); a study of an earlier format has none of them and reads unchanged.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

FORMAT_VERSION = 5
FORMAT_KEY = b"vaestudy.format_version"
TABLES = ("trials", "factors", "codes")
FINISHED = ("completed", "diverged")        # terminal: never rerun, never rewritten
STATES = ("running", "completed", "diverged", "failed", "stopped")
PART = re.compile(r"part-(\d+)-(\d+)\.parquet$")
CKPT = re.compile(r"epoch-(\d+)\.pt$")
FINAL_CKPT = "final.pt"
STATUS_TABLE = "status.parquet"
READ_THREADS = 32                            # parallel small reads (status files, segments)

f64, i64, s = pa.float64(), pa.int64(), pa.string()
SCHEMAS = {
    "trials": pa.schema([
        ("study", s), ("trial_id", s), ("epoch", i64), ("status", s), ("dataset", s),
        ("noise", s), ("beta", f64), ("sigma2", f64), ("equivalent_sigma2", f64),
        ("latent_dim", i64), ("seed", i64), ("evlb", f64), ("recon_mse", f64),
        ("kl_post_prior", f64), ("mi_xz", f64), ("kl_qz_pz", f64), ("kl_qstar_pz", f64),
        ("n_used_factors", i64), ("n_normal_variance_factors", i64), ("train_loss", f64),
        # format 4 (older files read them as null):
        ("mi_xz_est", f64), ("kl_qz_pz_est", f64), ("tc_est", f64),
        ("equivalent_sigma2_arith", f64), ("pi_at_floor", f64), ("normal_var_tol", f64),
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


# The driver's status table (study/tracker.py): one row per trial, its latest metrics.
STATUS_SCHEMA = pa.schema([
    ("trial_id", s), ("state", s), ("epoch", i64), ("epochs", i64), ("attempts", i64),
    ("started", f64), ("updated", f64), ("seconds", f64), ("error", s),
    ("noise", s), ("beta", f64), ("sigma2", f64), ("seed", i64), ("latent_dim", i64),
    ("evlb", f64), ("recon_mse", f64), ("mi_xz", f64), ("kl_qz_pz", f64), ("n_used_factors", i64),
])
STALE_TABLE_S = 90.0       # a running driver rewrites its table at least every 30 s


def status_row(st: dict) -> dict:
    """A status-table row from a trial's status file (its `final` metrics when finished)."""
    cfg, final = st.get("config") or {}, st.get("final") or {}
    noise, train = cfg.get("noise", {}), cfg.get("train", {})
    row = {"trial_id": st["trial_id"], "state": st["state"], "epochs": st.get("epochs"),
           "attempts": st.get("attempts"), "updated": st.get("updated"), "error": st.get("error"),
           "noise": noise.get("kind"), "beta": noise.get("beta"), "sigma2": noise.get("sigma2"),
           "seed": train.get("seed"), "latent_dim": cfg.get("model", {}).get("latent_dim"),
           "seconds": final.get("wall_time")}
    row.update({k: final[k] for k in STATUS_SCHEMA.names if k in final and k != "trial_id"})
    return row


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
S3_QUERY = ("endpoint_override", "scheme", "region")     # where the server is, never who you are
SECRETS = ("access_key", "secret_key", "session_token", "role_arn", "external_id", "sig")
SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "auth")
NAMED_USER = ("hdfs", "abfs", "abfss")     # user info names a user (hdfs) or a container (abfs)
NO_SECRETS = ("credentials come only from the environment (AWS_ACCESS_KEY_ID, "
              "AWS_SECRET_ACCESS_KEY; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_ACCOUNT_KEY), "
              "the AWS profile or an instance role, never from a URI that is stored and logged")


def check_uri(root: str) -> None:
    """Refuse an unknown scheme, a credential anywhere in the URI (user info, any scheme's
    secret query keys) or an unknown S3 query key, without touching any filesystem or
    network. The messages never repeat the URI, which may hold the secret."""
    if "://" not in root:
        return
    scheme = root.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise StoreError(f"storage: unknown scheme {scheme!r}; "
                         "allowed: a local path, file://, s3://, gs://, hdfs://, abfs://")
    parts = urlsplit(root)
    if parts.password is not None or (parts.username is not None and scheme not in NAMED_USER):
        raise StoreError(f"storage: a credential in the user-info part of the {scheme}:// URI "
                         f"(before '@'); {NO_SECRETS}")
    for key in parse_qs(parts.query, keep_blank_values=True):
        if key.lower() in SECRETS or any(w in key.lower() for w in SECRET_WORDS):
            raise StoreError(f"storage: {key} in the URI; {NO_SECRETS}")
        if scheme == "s3" and key not in S3_QUERY:
            raise StoreError(f"storage: unknown query parameter {key!r} in the URI; allowed: "
                             f"{', '.join(S3_QUERY)}")


def resolve_root(root: str) -> str:
    """The root every process opens: for s3://, the endpoint and region of the standard AWS
    variables (AWS_ENDPOINT_URL[_S3], AWS_REGION, AWS_DEFAULT_REGION) written into its query,
    so trials on other nodes reach the same server; values in the URI win. No credentials."""
    check_uri(root)
    if not root.startswith("s3://"):
        return root
    parts = urlsplit(root)
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "endpoint_override" not in q:
        e = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        q["endpoint_override"] = e.netloc
        q.setdefault("scheme", e.scheme)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region and "region" not in q:
        q["region"] = region
    query = urlencode(sorted(q.items()), safe=":")
    return urlunsplit(("s3", parts.netloc, parts.path, query, ""))


def split_query(uri: str) -> tuple[str, str]:
    """'s3://b/p?x=1' -> ('s3://b/p', '?x=1')."""
    base, sep, query = uri.partition("?")
    return base, sep + query


def open_root(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a local path or a URI pyarrow understands."""
    check_uri(root)
    if "://" not in root:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(root))
    try:
        if root.startswith("s3://"):
            return _s3(root)
        return pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"storage: cannot open {root!r}: {e}") from None


def _s3(root: str) -> tuple[pafs.FileSystem, str]:
    """S3 with credentials from the default chain (environment, profile, instance role),
    short connect timeouts and few retries, so an unreachable endpoint fails in seconds."""
    parts = urlsplit(root)
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    fs = pafs.S3FileSystem(endpoint_override=q.get("endpoint_override"),
                           scheme=q.get("scheme", "https"), region=q.get("region"),
                           connect_timeout=5, request_timeout=30, allow_delayed_open=True,
                           check_directory_existence_before_creation=True,
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=3))
    return fs, f"{parts.netloc}{parts.path}"


def polars_options(root: str) -> dict[str, str] | None:
    """Polars' storage_options for the same server (credentials still from the environment)."""
    if not root.startswith("s3://"):
        return None
    q = {k: v[-1] for k, v in parse_qs(urlsplit(root).query).items()}
    out = {}
    if "endpoint_override" in q:
        out["aws_endpoint_url"] = f"{q.get('scheme', 'https')}://{q['endpoint_override']}"
        out["aws_allow_http"] = str(q.get("scheme") == "http").lower()
    if "region" in q:
        out["aws_region"] = q["region"]
    return out or None


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
        self.root, self.study = resolve_root(root), study
        self.fs, base = open_root(self.root)
        self.base = f"{base.rstrip('/')}/{study}"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.storage_options = polars_options(self.root)
        self._status: dict[str, dict] = {}            # status files this process wrote
        self._last: dict[str, tuple[int, int, pa.Table]] = {}   # its last trials segment
        self._boto = None                              # boto3 client, made on first use

    def __getstate__(self) -> dict:
        """A store travels to Ray workers; its boto3 client (sockets, SSL) is made anew there."""
        return {**self.__dict__, "_boto": None}

    # ---- paths -------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def uri(self, *parts: str) -> str:
        """Where users find it: a local path, or a URI with the server's query (no secrets)."""
        p = self.path(*parts)
        return p if self.local else f"{self.root.split('://')[0]}://{p}{split_query(self.root)[1]}"

    def glob(self, table: str) -> str:
        """A glob Polars scans, with `storage_options` (a plain URI: Polars takes no query)."""
        p = self.path(table, "**", "*.parquet")
        return p if self.local else f"{self.root.split('://')[0]}://{p}"

    # ---- low-level atomic IO ---------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Atomic: readers see the old file or the whole new one, never a part. On object
        stores one PUT, which they publish atomically, and no directory markers."""
        if not self.local:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        head, name = path.rsplit("/", 1)        # a leading "." hides it from directory readers
        os.makedirs(head, exist_ok=True)
        tmp = f"{head}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def read_bytes(self, path: str) -> bytes:
        """The whole file. On S3 one GET (pyarrow's streams send a HEAD first, for the size);
        a missing object is FileNotFoundError, as on disk."""
        if not self.root.startswith("s3://"):
            with self.fs.open_input_stream(path) as f:
                return f.read()
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = path.split("/", 1)
        try:
            return self._s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"s3://{path}") from None
            raise OSError(f"s3://{path}: {e}") from None
        except BotoCoreError as e:
            raise OSError(f"s3://{path}: {e}") from None

    def read_optional(self, path: str) -> bytes | None:
        """The file, or None where there is none: one request either way (not a check, then
        a read)."""
        try:
            return self.read_bytes(path)
        except FileNotFoundError:
            return None

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def listdir(self, path: str) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sorted(i.path.rsplit("/", 1)[-1] for i in info)

    def read_many(self, paths: list[str], read) -> list:
        """read(path) for each path on a thread pool: object stores answer in parallel."""
        if len(paths) < 4:
            return [read(p) for p in paths]
        with ThreadPoolExecutor(min(READ_THREADS, len(paths))) as pool:
            return list(pool.map(read, paths))

    def delete(self, path: str) -> None:
        """Remove a file; a missing one is fine. On S3 one DeleteObject request: pyarrow's
        delete_file adds a HEAD and then a directory-marker PUT for the parent."""
        if self.root.startswith("s3://"):
            bucket, key = path.split("/", 1)
            self._s3_client().delete_object(Bucket=bucket, Key=key)
            return
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def delete_dir(self, path: str) -> None:
        """Remove a folder and everything under it; a missing one is fine. On S3 a listing
        and one DeleteObjects request per 1,000 keys, and no directory marker is left (pyarrow's
        delete_dir writes one for the parent once it is empty)."""
        if not self.root.startswith("s3://"):
            try:
                self.fs.delete_dir(path)
            except FileNotFoundError:
                pass
            return
        bucket, prefix = path.rstrip("/").split("/", 1)
        client = self._s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})

    def delete_many(self, paths: list[str]) -> None:
        """Remove files; missing ones are fine. On S3 one DeleteObjects request per 1,000."""
        if not self.root.startswith("s3://"):
            for p in paths:
                self.delete(p)
            return
        by_bucket: dict[str, list[str]] = {}
        for p in paths:
            bucket, key = p.split("/", 1)
            by_bucket.setdefault(bucket, []).append(key)
        client = self._s3_client()
        for bucket, keys in by_bucket.items():
            for i in range(0, len(keys), 1000):
                client.delete_objects(Bucket=bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def _s3_client(self):
        """boto3 for deletes and whole-object reads, on the same server; credentials from the
        same default chain."""
        if self._boto is None:
            import boto3

            q = {k: v[-1] for k, v in parse_qs(urlsplit(self.root).query).items()}
            endpoint = q.get("endpoint_override")
            from botocore.config import Config

            self._boto = boto3.client(
                "s3", region_name=q.get("region"),
                endpoint_url=f"{q.get('scheme', 'https')}://{endpoint}" if endpoint else None,
                config=Config(max_pool_connections=READ_THREADS))     # read_many's threads
        return self._boto

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=1, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def read_meta(self) -> dict | None:
        """study.json (None for a `vaestudy train` study), its format checked."""
        path = self.path("study.json")
        meta = self.read_optional(path)
        if meta is None:
            return None
        meta = json.loads(meta)
        meta["format_version"] = check_format(meta.get("format_version", 1), self.uri("study.json"))
        return meta

    def check_writable(self) -> None:
        """Fail before any trial starts when the storage cannot take a file. An object store
        gets one LIST instead (a missing bucket, wrong credentials or an unreachable endpoint
        fail it), since a deleted probe would leave a directory marker behind."""
        if not self.local:
            try:
                self.fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
                bucket = self.fs.get_file_info(self.base.split("/", 1)[0])
            except OSError as e:
                raise StoreError(f"storage: cannot use {self.uri()}: {_why(e)}") from None
            if bucket.type == pafs.FileType.NotFound:
                raise StoreError(f"storage: cannot use {self.uri()}: the bucket "
                                 f"{bucket.path!r} does not exist")
            return
        probe = self.path(".write-probe-" + uuid.uuid4().hex[:8])
        try:
            self.write_bytes(probe, b"x" * 4096)
            self.delete(probe)
        except OSError as e:
            raise StoreError(f"storage: cannot write to {self.uri()}: {_why(e)}") from None

    # ---- segments ----------------------------------------------------------------
    def write_segment(self, trial_id: str, rows: dict[str, list[dict]], first: int, last: int):
        for table, table_rows in rows.items():
            if table_rows:
                t = pa.Table.from_pylist(table_rows, schema=SCHEMAS[table])
                self._write_table(table, trial_id, t, first, last)
                if table == "trials":                  # `finish` stamps it without a read
                    self._last[trial_id] = (first, last, t)

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
        """A segment (small): on S3 one GET of all of it, not a HEAD and ranged GETs."""
        src = (self.fs.open_input_file(path) if self.local
               else pa.BufferReader(self.read_bytes(path)))
        t = pq.read_table(src)
        check_format((t.schema.metadata or {}).get(FORMAT_KEY, 1), path)
        return t.replace_schema_metadata(None)

    def finish(self, trial_id: str, state: str, error: str | None = None, **extra) -> None:
        """Stamp the trial's last row with `state` and record the state. On local disk its
        segments are merged into one file per table; on object stores, where that costs a
        read and a delete per segment, only the last trials segment is rewritten."""
        if self.local:
            self._merge(trial_id, state)
        else:
            self._stamp_last(trial_id, state)
        self.set_status(trial_id, state, error=error, **extra)

    def _stamp_last(self, trial_id: str, state: str) -> None:
        if trial_id in self._last:
            first, last, t = self._last[trial_id]
        else:
            parts = self.parts("trials", trial_id)
            if not parts:
                return
            first, last, path = parts[-1]
            t = self._read_file(path)
        self._write_table("trials", trial_id, _stamp(t, state), first, last)

    def _merge(self, trial_id: str, state: str) -> None:
        for table in TABLES:
            parts = self.parts(table, trial_id)
            if not parts:
                continue
            t = self._read(parts)
            if table == "trials":
                t = _stamp(t, state)
            first, last = parts[0][0], parts[-1][1]
            self._write_table(table, trial_id, t.sort_by("epoch"), first, last)
            for a, b, path in parts:
                if (a, b) != (first, last):
                    self.delete(path)

    # ---- trial status ------------------------------------------------------------
    def set_status(self, trial_id: str, state: str, **fields) -> None:
        assert state in STATES, state
        path = self.path("status", f"{trial_id}.json")
        old = self._status.get(trial_id) or self.status(trial_id) or {}
        new = {**old, **{k: v for k, v in fields.items() if v is not None},
               "trial_id": trial_id, "state": state, "updated": time.time(),
               "host": socket.gethostname()}
        if state in ("running",):
            new.pop("error", None)
        self.write_json(path, new)
        self._status[trial_id] = new

    def status(self, trial_id: str) -> dict | None:
        """The trial's status file, or None: one GET, no existence check first."""
        try:
            return self.read_json(self.path("status", f"{trial_id}.json"))
        except FileNotFoundError:
            return None

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

    # ---- checkpoints ---------------------------------------------------------------
    def save_checkpoint(self, trial_id: str, epoch: int, state: dict | bytes, keep: int) -> None:
        """Write a checkpoint (a state dict, or one `checkpoint_bytes` serialised), keep `keep`."""
        data = state if isinstance(state, bytes) else checkpoint_bytes(state)
        self.write_bytes(self.path("checkpoints", trial_id, f"epoch-{epoch:06d}.pt"), data)
        for e, path in self.checkpoints(trial_id)[:-keep]:
            self.delete(path)

    def checkpoints(self, trial_id: str) -> list[tuple[int, str]]:
        out = []
        for name in self.listdir(self.path("checkpoints", trial_id)):
            if m := CKPT.fullmatch(name):
                out.append((int(m[1]), self.path("checkpoints", trial_id, name)))
        return sorted(out)

    def keep_final(self, trial_id: str, mode: str, state: dict) -> None:
        """A completed trial's checkpoints: `weights` -> final.pt with the model's weights and
        no optimizer state, `full` -> its last checkpoint as it is, `none` -> nothing.
        final.pt is written before the epoch checkpoints go, so a crash keeps one or the other."""
        ckpts = self.checkpoints(trial_id)
        if mode == "full":
            ckpts = ckpts[:-1]
        elif mode == "weights":
            weights = {k: state[k] for k in ("epoch", "wall", "vae", "trial_config")}
            self.write_bytes(self.path("checkpoints", trial_id, FINAL_CKPT),
                             checkpoint_bytes(weights))
        for _, path in ckpts:
            self.delete(path)

    def load_checkpoint(self, trial_id: str, epoch: int | None = None) -> dict | None:
        """The latest (or the given epoch's) checkpoint, loaded without unpickling objects;
        a completed trial's final weights (final.pt, no optimizer state) when that is all."""
        import torch

        final = self.path("checkpoints", trial_id, FINAL_CKPT)
        found = self.checkpoints(trial_id)
        if not found and self.exists(final):
            state = torch.load(io.BytesIO(self.read_bytes(final)), weights_only=True,
                               map_location="cpu")
            return state if epoch is None or state["epoch"] == epoch else None
        for e, path in reversed(found):
            if epoch is not None and e != epoch:
                continue
            try:
                return torch.load(io.BytesIO(self.read_bytes(path)), weights_only=True,
                                  map_location="cpu")
            except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
                # truncated, corrupt, or holding objects weights_only refuses: take the one before
                print(f"[store] skipping checkpoint {path}: cannot load it "
                      f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})",
                      flush=True)
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
        try:
            t = pq.read_table(io.BytesIO(self.read_bytes(self.path(STATUS_TABLE))))
        except (FileNotFoundError, pa.ArrowInvalid):
            return None
        return t.to_pylist(), json.loads((t.schema.metadata or {})[b"vaestudy"])

    def trial_states(self, trial_ids: list[str] | None = None
                     ) -> tuple[dict[str, dict], dict | None]:
        """({trial_id: status row}, the table's metadata or None when read from the files):
        the status table when it is current (one read),
        else every status file in parallel. Current: the driver wrote it when it ended
        (`final`), or less than STALE_TABLE_S ago while it runs."""
        table = self.read_status_table()
        if table is not None:
            rows, meta = table
            age = time.time() - meta.get("written_at", 0)
            if meta.get("final") or age < STALE_TABLE_S:
                return {r["trial_id"]: r for r in rows}, meta
        got = self.status_many(trial_ids) if trial_ids is not None else \
            {st["trial_id"]: st for st in self.all_status()}
        return {t: status_row(st) for t, st in got.items()}, None


def checkpoint_bytes(state: dict) -> bytes:
    """A state dict as torch.save bytes: taken on the training thread, so the copy is of this
    epoch's weights; the upload can then happen on any thread."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _stamp(t: pa.Table, state: str) -> pa.Table:
    """The trials table with its last epoch's `status` set to `state`."""
    epochs = t.column("epoch").to_pylist()
    status = [state if e == max(epochs) else "running" for e in epochs]
    return t.set_column(t.schema.get_field_index("status"), "status", pa.array(status, pa.string()))


def _why(e: OSError) -> str:
    """An S3 error as one line a user can act on."""
    text = " ".join(str(e).split())
    for code, hint in (("NO_SUCH_BUCKET", "the bucket does not exist"),
                       ("INVALID_ACCESS_KEY_ID", "wrong credentials: the access key is unknown"),
                       ("SIGNATURE_DOES_NOT_MATCH", "wrong credentials: the secret key does not "
                                                    "match"),
                       ("ACCESS_DENIED", "access denied: these credentials may not use it"),
                       ("NETWORK_CONNECTION", "the endpoint is unreachable")):
        if code in text:
            return f"{hint} ({text[:200]})"
    return text[:300]
