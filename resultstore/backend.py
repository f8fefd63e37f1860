"""Where the bytes live: one backend per kind of storage, chosen once from the URI.

Every backend answers the same operations, so nothing above this module asks
which storage it is on:

    read(path) -> bytes            FileNotFoundError where there is none; StorageIOError
                                   (an OSError) when the storage failed after retries
    read_optional(path)            None where there is none (one request, no check first)
    write(path, data)              atomic: readers see the old file or the whole new one
    create(path, data) -> bool     atomic create-if-absent: False where a file is there
    publish(scratch, path) -> bool a finished local scratch file made visible at `path`
                                   with create-if-absent (large files too)
    list / walk / exists / mtime / age    one folder's names; every file below; times by
                                   the storage's own clock (not this machine's)
    delete / delete_many / delete_dir    missing files are fine
    sweep(folder, older_than)      temp files and incomplete uploads left by a crash

Local and NFS paths: temp file, fsync, rename; create and publish by hard link,
which fails where the name exists (NFSv3 and later do it on the server). S3:
boto3, whole-object GETs, conditional PUTs (`If-None-Match: *`) and multipart
uploads completed with the same condition; a server that ignores the condition is
detected by `check_conditional`. Other pyarrow filesystems (gs://, hdfs://,
abfs://): check, then write, which two writers racing can both pass; documented
as such and untested here.
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import pyarrow as pa
import pyarrow.fs as pafs

from resultstore import uri as uris
from resultstore.uri import StoreError

PART_BYTES = 64 << 20          # multipart upload part size; smaller files are one PUT
READ_TRIES = 3                 # whole-object reads whose body fails mid-stream


class StorageIOError(OSError):
    """The storage failed to answer (after retries): not a missing file, not a corrupt one."""


def open_backend(root: str) -> tuple["Backend", str]:
    """(backend, base path) for a resolved results root."""
    uris.check_uri(root)
    k = uris.kind(root)
    if k == "local":
        path = root[len("file://"):] if root.startswith("file://") else root
        return LocalBackend(), os.path.abspath(os.path.expanduser(path))
    if k == "s3":
        parts = uris.split_query(root)[0][len("s3://"):]
        return S3Backend(root), parts.rstrip("/")
    try:
        fs, base = pafs.FileSystem.from_uri(root)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"storage: cannot open {root!r}: {e}") from None
    return ArrowBackend(fs), base.rstrip("/")


def _tmp_name(path: str) -> str:
    head, name = path.rsplit("/", 1)        # a leading "." hides it from directory readers
    return f"{head}/.{name}.tmp-{uuid.uuid4().hex[:8]}"


class Backend:
    local = False

    def read_optional(self, path: str) -> bytes | None:
        try:
            return self.read(path)
        except FileNotFoundError:
            return None


class LocalBackend(Backend):
    """A local or NFS folder."""
    local = True

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def open_input_file(self, path: str):
        return pa.OSFile(path, "rb")

    def write(self, path: str, data: bytes) -> None:
        os.replace(self._tmp_with(path, data), path)

    def _tmp_with(self, path: str, data: bytes) -> str:
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = _tmp_name(path)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def create(self, path: str, data: bytes) -> bool:
        return self.publish(self._tmp_with(path, data), path)

    def scratch(self, path: str) -> str:
        """Where to build a file that `publish` will make `path`: beside it, hidden."""
        os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return _tmp_name(path)

    def publish(self, scratch: str, path: str) -> bool:
        try:
            os.link(scratch, path)              # atomic, and refused where `path` exists
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(scratch)

    def list(self, folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def walk(self, folder: str) -> list[str]:
        out = []
        for d, _, files in os.walk(folder):
            rel = os.path.relpath(d, folder)
            out += [f if rel == "." else f"{rel}/{f}" for f in files]
        return sorted(out)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mtime(self, path: str) -> float | None:
        """When `path` was last written (seconds since the epoch, the storage's clock)."""
        try:
            return os.stat(path).st_mtime
        except FileNotFoundError:
            return None

    def age(self, path: str) -> float | None:
        """Seconds since `path` was written, by the storage's clock: a probe written beside
        it gives "now" (on NFS both times are the server's)."""
        try:
            then = os.stat(path).st_mtime
        except FileNotFoundError:
            return None
        probe = self._tmp_with(path, b"")
        try:
            return os.stat(probe).st_mtime - then
        finally:
            os.remove(probe)

    def delete(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def delete_many(self, paths: list[str]) -> None:
        """The files, and their folders where that leaves them empty (as on object stores,
        where a folder is only a prefix)."""
        for p in paths:
            self.delete(p)
        for d in sorted({p.rsplit("/", 1)[0] for p in paths}, reverse=True):
            try:
                os.rmdir(d)
            except OSError:                            # not empty, or gone
                pass

    def delete_dir(self, path: str) -> None:
        import shutil
        shutil.rmtree(path, ignore_errors=True)

    def sweep(self, folder: str, older_than: float) -> list[str]:
        """Temp files older than `older_than` seconds (a crashed writer's), removed."""
        gone, now = [], time.time()
        for rel in self.walk(folder):
            p = f"{folder}/{rel}"
            if ".tmp-" in rel.rsplit("/", 1)[-1]:
                try:
                    if now - os.stat(p).st_mtime > older_than:
                        os.remove(p)
                        gone.append(p)
                except FileNotFoundError:
                    pass
        return gone

    def check_conditional(self, folder: str) -> None:
        """Hard links refuse an existing name on every POSIX filesystem."""


class S3Backend(Backend):
    """An S3-compatible server through boto3 (pyarrow only for ranged reads of large files)."""

    def __init__(self, root: str):
        self.root = root
        self._client = None
        self._fs = None

    def __getstate__(self) -> dict:
        """Sent to Ray workers without its clients (sockets, SSL): made anew there."""
        return {"root": self.root, "_client": None, "_fs": None}

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            q = uris.query(self.root)
            # a session of its own: boto3's default one keeps the first credentials it read
            self._client = boto3.session.Session().client(
                "s3", region_name=q.get("region"), endpoint_url=uris.endpoint_url(self.root),
                config=Config(max_pool_connections=32, connect_timeout=5, read_timeout=30,
                              retries={"mode": "standard", "max_attempts": 4}))
        return self._client

    @property
    def fs(self) -> pafs.S3FileSystem:
        if self._fs is None:
            q = uris.query(self.root)
            self._fs = pafs.S3FileSystem(
                endpoint_override=q.get("endpoint_override"), scheme=q.get("scheme", "https"),
                region=q.get("region"), connect_timeout=5, request_timeout=30,
                retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=4))
        return self._fs

    @staticmethod
    def _split(path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key

    def _errors(self, path: str, e: Exception):
        """A boto3 error as FileNotFoundError (missing) or StorageIOError (anything else)."""
        from botocore.exceptions import ClientError

        code = e.response.get("Error", {}).get("Code") if isinstance(e, ClientError) else None
        if code in ("NoSuchKey", "404", "NotFound"):
            return FileNotFoundError(f"s3://{path}")
        return StorageIOError(f"s3://{path}: {type(e).__name__}: {e}")

    def read(self, path: str) -> bytes:
        """One GET of the whole object; a body cut mid-stream is read again."""
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self._split(path)
        for attempt in range(READ_TRIES):
            try:
                return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except (ClientError, BotoCoreError, OSError) as e:
                err = self._errors(path, e) if not isinstance(e, OSError) else \
                    StorageIOError(f"s3://{path}: {type(e).__name__}: {e}")
                if isinstance(err, FileNotFoundError) or attempt == READ_TRIES - 1:
                    raise err from None
                time.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    def open_input_file(self, path: str):
        return self.fs.open_input_file(path)

    def write(self, path: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self._split(path)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data)
        except (ClientError, BotoCoreError) as e:
            raise self._errors(path, e) from None

    def create(self, path: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self._split(path)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            if _precondition(e):
                return False
            raise self._errors(path, e) from None
        except BotoCoreError as e:
            raise self._errors(path, e) from None

    def scratch(self, path: str) -> str:
        fd, tmp = tempfile.mkstemp(prefix="vaestudy-", suffix=".parquet.tmp")
        os.close(fd)
        return tmp

    def publish(self, scratch: str, path: str) -> bool:
        """The local file at `path` with create-if-absent: one conditional PUT, or a multipart
        upload completed with the condition (aborted on any failure, so no part lingers)."""
        try:
            size = os.path.getsize(scratch)
            if size <= PART_BYTES:
                with open(scratch, "rb") as f:
                    return self.create(path, f.read())
            return self._multipart(scratch, path)
        finally:
            os.remove(scratch)

    def _multipart(self, scratch: str, path: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = self._split(path)
        upload = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        try:
            parts = []
            with open(scratch, "rb") as f:
                while chunk := f.read(PART_BYTES):
                    n = len(parts) + 1
                    r = self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload,
                                                PartNumber=n, Body=chunk)
                    parts.append({"PartNumber": n, "ETag": r["ETag"]})
            self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": parts},
                                                  IfNoneMatch="*")
            return True
        except ClientError as e:
            self._abort(bucket, key, upload)
            if _precondition(e):
                return False
            raise self._errors(path, e) from None
        except BaseException:
            self._abort(bucket, key, upload)
            raise

    def _abort(self, bucket: str, key: str, upload: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
        except Exception:                               # noqa: BLE001 (swept later)
            pass

    def list(self, folder: str) -> list[str]:
        bucket, prefix = self._split(folder.rstrip("/") + "/")
        out = []
        for page in self._pages(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            out += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
            out += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
        return sorted(out)

    def walk(self, folder: str) -> list[str]:
        bucket, prefix = self._split(folder.rstrip("/") + "/")
        return sorted(o["Key"][len(prefix):] for page in self._pages(Bucket=bucket, Prefix=prefix)
                      for o in page.get("Contents", []))

    def _pages(self, **kw):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from self.client.get_paginator("list_objects_v2").paginate(**kw)
        except (ClientError, BotoCoreError) as e:
            raise self._errors(f"{kw['Bucket']}/{kw['Prefix']}", e) from None

    def exists(self, path: str) -> bool:
        """A file, or a folder (a prefix with objects below it), as on a local disk."""
        if self._head(path) is not None:
            return True
        bucket, prefix = self._split(path.rstrip("/") + "/")
        got = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return got.get("KeyCount", 0) > 0

    def _head(self, path: str) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = self._split(path)
        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            err = self._errors(path, e)
            if isinstance(err, FileNotFoundError):
                return None
            raise err from None

    def mtime(self, path: str) -> float | None:
        head = self._head(path)
        return None if head is None else head["LastModified"].timestamp()

    def age(self, path: str) -> float | None:
        """The server's Date header minus the object's LastModified: both the server's clock."""
        head = self._head(path)
        if head is None:
            return None
        now = _server_now(head)
        return (now - head["LastModified"]).total_seconds()

    def delete(self, path: str) -> None:
        """One DeleteObject (pyarrow's delete_file adds a HEAD and a directory marker PUT)."""
        bucket, key = self._split(path)
        self.client.delete_object(Bucket=bucket, Key=key)

    def delete_many(self, paths: list[str]) -> None:
        """One DeleteObjects request per 1,000 keys."""
        by_bucket: dict[str, list[str]] = {}
        for p in paths:
            bucket, key = self._split(p)
            by_bucket.setdefault(bucket, []).append(key)
        for bucket, keys in by_bucket.items():
            for i in range(0, len(keys), 1000):
                self.client.delete_objects(Bucket=bucket, Delete={
                    "Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})

    def delete_dir(self, path: str) -> None:
        self.delete_many([f"{path.rstrip('/')}/{rel}" for rel in self.walk(path)])

    def sweep(self, folder: str, older_than: float) -> list[str]:
        """Multipart uploads under `folder` begun more than `older_than` s ago, aborted."""
        bucket, prefix = self._split(folder.rstrip("/") + "/")
        got = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        now, gone = _server_now(got), []
        for u in got.get("Uploads", []):
            if (now - u["Initiated"]).total_seconds() > older_than:
                self._abort(bucket, u["Key"], u["UploadId"])
                gone.append(f"{bucket}/{u['Key']}")
        return gone

    def check_conditional(self, folder: str) -> None:
        """Refuse a server that ignores If-None-Match: a second conditional PUT of one key
        must fail. (Two drivers would otherwise both take a lease, silently.)"""
        probe = f"{folder.rstrip('/')}/.conditional-probe-{uuid.uuid4().hex[:8]}"
        try:
            first, second = self.create(probe, b"1"), self.create(probe, b"2")
        finally:
            self.delete(probe)
        if not first or second:
            raise StoreError(f"storage: the server at {uris.endpoint_url(self.root) or 'AWS'} "
                             "ignores conditional writes (If-None-Match), so a lease or a "
                             "compaction could not be exclusive; use a server that supports "
                             "them (AWS S3, MinIO, Ceph RGW 18+, moto 5)")


class ArrowBackend(Backend):
    """Another pyarrow filesystem (gs://, hdfs://, abfs://): check, then write."""

    def __init__(self, fs: pafs.FileSystem):
        self.fs = fs

    def read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StorageIOError(f"{path}: {e}") from None

    def open_input_file(self, path: str):
        return self.fs.open_input_file(path)

    def write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as f:
            f.write(data)

    def create(self, path: str, data: bytes) -> bool:
        if self.exists(path):
            return False
        self.write(path, data)
        return True

    def scratch(self, path: str) -> str:
        fd, tmp = tempfile.mkstemp(prefix="vaestudy-", suffix=".parquet.tmp")
        os.close(fd)
        return tmp

    def publish(self, scratch: str, path: str) -> bool:
        try:
            if self.exists(path):
                return False
            pafs.copy_files(scratch, path, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
            return True
        finally:
            os.remove(scratch)

    def list(self, folder: str) -> list[str]:
        info = self.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        return sorted(i.path.rsplit("/", 1)[-1] for i in info)

    def walk(self, folder: str) -> list[str]:
        sel = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        base = folder.rstrip("/") + "/"
        return sorted(i.path[len(base):] for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File)

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def mtime(self, path: str) -> float | None:
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound or info.mtime is None:
            return None
        return info.mtime.timestamp()

    def age(self, path: str) -> float | None:
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound or info.mtime is None:
            return None
        return (datetime.now(timezone.utc) - info.mtime).total_seconds()

    def delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass

    def delete_many(self, paths: list[str]) -> None:
        for p in paths:
            self.delete(p)

    def delete_dir(self, path: str) -> None:
        try:
            self.fs.delete_dir(path)
        except FileNotFoundError:
            pass

    def sweep(self, folder: str, older_than: float) -> list[str]:
        return []

    def check_conditional(self, folder: str) -> None:
        """Creates here are check-then-write (module doc): said once per lease, not refused,
        since gs://, hdfs:// and abfs:// users have no other way to run."""
        print(f"warning: storage {folder.split('/', 1)[0]!r}: create-if-absent is a check, then "
              "a write here; two drivers started within the same second could both take the "
              "lease (use s3:// or a shared path where that matters)", flush=True)


def _precondition(e) -> bool:
    return e.response.get("Error", {}).get("Code") in (
        "PreconditionFailed", "ConditionalRequestConflict", "412")


def _server_now(response: dict) -> datetime:
    """The server's clock from a response's Date header (this machine's where it has none)."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    return parsedate_to_datetime(date) if date else datetime.now(timezone.utc)
