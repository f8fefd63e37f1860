"""One driver per study: a lease on the study's storage, renewed by a heartbeat.

    ROOT/STUDY/lease/driver-000001.json   {"driver", "host", "pid", "since", "renewed", "ttl"}

A driver takes the lease by creating the next generation's file, atomically and
only where it does not exist yet: `O_EXCL` on a local or NFS path, a
conditional PUT (`If-None-Match: *`) on S3 through boto3 (pyarrow cannot
send one). Two drivers racing for one generation cannot both create it, so
exactly one wins, on any number of hosts. The holder rewrites its own file
every ttl/4 seconds. A later driver may create the next generation only once
the newest is stale: not renewed for `ttl` seconds, or written by a process of
this host that no longer exists; it says so in one line. A holder that
finds a newer generation than its own (it stalled past `ttl` and was taken
over) stops its study as Ctrl-C would.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

from study.inputs import UsageError
from trainables.store import ResultStore

DRIVER_ID = uuid.uuid4().hex[:12]          # this driver process; also names its storage probe
TTL = float(os.environ.get("VAESTUDY_LEASE_TTL", 60))
GENERATION = re.compile(r"driver-(\d{6})\.json$")


class Lease:
    """`with Lease(store):` holds the study's lease for the block, or raises UsageError."""

    def __init__(self, store: ResultStore, ttl: float = TTL, log=print):
        self.store, self.ttl, self.log = store, ttl, log
        self.files = lease_files(store)
        self.gen = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        gens = self._generations()
        newest = gens[-1] if gens else 0
        holder = self._read(newest) if newest else None
        if holder is not None:
            if not self._stale(holder):
                raise UsageError(held_line(self.store.study, holder))
            self.log(f"taking over study {self.store.study!r} from driver pid {holder.get('pid')} on "
                     f"{holder.get('host')}: its lease was last renewed "
                     f"{time.time() - holder.get('renewed', 0):.0f} s ago (stale after "
                     f"{holder.get('ttl', self.ttl):.0f} s)")
        if not self.files.create(_name(newest + 1), self._record(since=time.time())):
            raise UsageError(held_line(self.store.study, self._read(newest + 1) or {}))
        self.gen = newest + 1
        for g in gens:                              # the generations taken over
            self.files.delete(_name(g))
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="vaestudy-lease")
        self._beat.start()

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        if self.gen and self._generations()[-1:] == [self.gen]:
            self.files.delete(_name(self.gen))
        self.gen = 0

    def _heartbeat(self) -> None:
        since, failing = time.time(), False
        while not self._stop.wait(self.ttl / 4):
            try:
                if self._renew(since):
                    return
                failing = False
            except Exception as e:                      # noqa: BLE001 (a storage blip: retry)
                if not failing:
                    self.log(f"lease: cannot renew in {self.store.uri()} ({e}); retrying")
                failing = True

    def _renew(self, since: float) -> bool:
        """Rewrite our generation; True (and SIGINT to this driver) where a newer one exists."""
        newer = [g for g in self._generations() if g > self.gen]
        if not newer:
            self.files.put(_name(self.gen), self._record(since=since))
            return False
        holder = self._read(newer[-1]) or {}
        self.log(f"lease lost: driver pid {holder.get('pid')} on {holder.get('host')} took over "
                 f"study {self.store.study!r} after this driver was silent for {self.ttl:.0f} s; "
                 "stopping")
        os.kill(os.getpid(), signal.SIGINT)             # as Ctrl-C: Tune stops the trials
        return True

    def _record(self, since: float) -> bytes:
        return json.dumps({"driver": DRIVER_ID, "host": socket.gethostname(), "pid": os.getpid(),
                           "since": since, "renewed": time.time(), "ttl": self.ttl}).encode()

    def _generations(self) -> list[int]:
        return sorted(int(m[1]) for n in self.files.names() if (m := GENERATION.fullmatch(n)))

    def _read(self, gen: int) -> dict | None:
        for _ in range(20):                         # O_EXCL creates, then writes: wait for it
            data = self.files.read(_name(gen))
            if data is None:
                return None
            try:
                return json.loads(data)
            except ValueError:
                time.sleep(0.1)
        return {"renewed": time.time(), "ttl": self.ttl}     # being written: just taken

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid", -1)):
            return True                             # its process is gone: no need to wait
        return time.time() - holder.get("renewed", 0) > holder.get("ttl", self.ttl)


def held_line(study: str, holder: dict) -> str:
    age = time.time() - holder.get("renewed", time.time())
    return (f"name: study {study!r} is being run by pid {holder.get('pid')} on "
            f"{holder.get('host')} since {time.ctime(holder.get('since', 0))}; wait for it, or "
            f"stop it and `vaestudy resume` (its lease, renewed {age:.0f} s ago, is taken over "
            f"once {holder.get('ttl', TTL):.0f} s old)")


def _name(gen: int) -> str:
    return f"driver-{gen:06d}.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError, TypeError):
        return False
    except PermissionError:                          # exists, owned by someone else
        return True
    return True


# ---- where lease files live: create-if-absent per backend ------------------------------

def lease_files(store: ResultStore):
    if store.local:
        return LocalFiles(store.path("lease"))
    if store.root.startswith("s3://"):
        return S3Files(store.root, store.path("lease"))
    return ArrowFiles(store, store.path("lease"))


class LocalFiles:
    """A local or NFS folder: O_EXCL creates (NFSv3+ does it on the server)."""

    def __init__(self, folder: str):
        self.folder = folder

    def create(self, name: str, data: bytes) -> bool:
        os.makedirs(self.folder, exist_ok=True)
        try:
            fd = os.open(os.path.join(self.folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True

    def put(self, name: str, data: bytes) -> None:
        tmp = os.path.join(self.folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, os.path.join(self.folder, name))

    def read(self, name: str) -> bytes | None:
        try:
            with open(os.path.join(self.folder, name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def names(self) -> list[str]:
        try:
            return os.listdir(self.folder)
        except FileNotFoundError:
            return []

    def delete(self, name: str) -> None:
        try:
            os.remove(os.path.join(self.folder, name))
        except FileNotFoundError:
            pass


class S3Files:
    """An S3 prefix through boto3: a conditional PUT creates only where no object is."""

    def __init__(self, root: str, path: str):
        import boto3

        query = parse_qs(urlsplit(root).query)
        endpoint = query.get("endpoint_override", [None])[0]
        if endpoint and "://" not in endpoint:
            endpoint = f"{query.get('scheme', ['https'])[0]}://{endpoint}"
        self.client = boto3.client("s3", endpoint_url=endpoint,
                                   region_name=query.get("region", [None])[0])
        self.bucket, _, prefix = path.partition("/")
        self.prefix = prefix.rstrip("/") + "/"

    def create(self, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data,
                                   IfNoneMatch="*")
        except ClientError as e:
            if e.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        return True

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data)

    def read(self, name: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def names(self) -> list[str]:
        out = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        return [o["Key"][len(self.prefix):] for o in out.get("Contents", [])]

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)


class ArrowFiles:
    """Other pyarrow filesystems (gs://, hdfs://, ...): check, then write; not atomic, so
    two drivers started within the same second may both pass. Use s3:// or a shared path
    where that matters."""

    def __init__(self, store: ResultStore, folder: str):
        self.store, self.folder = store, folder

    def create(self, name: str, data: bytes) -> bool:
        path = f"{self.folder}/{name}"
        if self.store.exists(path):
            return False
        self.store.write_bytes(path, data)
        return True

    def put(self, name: str, data: bytes) -> None:
        self.store.write_bytes(f"{self.folder}/{name}", data)

    def read(self, name: str) -> bytes | None:
        path = f"{self.folder}/{name}"
        return self.store.read_bytes(path) if self.store.exists(path) else None

    def names(self) -> list[str]:
        return self.store.listdir(self.folder)

    def delete(self, name: str) -> None:
        self.store.delete(f"{self.folder}/{name}")
