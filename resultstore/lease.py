"""One driver per study: a fenced lease on the study's storage, renewed by a heartbeat.

    ROOT/STUDY/lease/driver-<gen>.json   {"driver", "host", "pid", "since", "renewed",
                                          "ttl", "released"}

A driver takes the lease by creating the next generation's file with the
backend's atomic create-if-absent (a hard link on a local or NFS path, a
conditional PUT on S3; resultstore/backend.py), so of two drivers racing for one
generation exactly one wins, on any number of hosts. A server that ignores the
condition is refused before the first lease (`check_conditional`), and the
winner reads its file back. Generations are never deleted, only marked
`released`, so they only grow: a trial started under generation G stops writing
once G+1 exists (resultstore/trial.py), which fences a driver that lost the lease.

A later driver may take generation N+1 once N is released, or stale: not
renewed for its `ttl` by the storage's own clock (the file's age as the server
tells it, not this machine's time), or written by a process of this host that
no longer exists. The holder rewrites its file every ttl/4. A holder whose last
good renewal is older than ttl/2 (storage unreachable), or that finds a newer
generation (it was paused past ttl and taken over), has lost the lease: it
stops its study as Ctrl-C would, and the runner then writes no final status,
no `finished` and no compaction.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid

from resultstore.format import LEASE, LEASE_DIR, lease_name
from resultstore.uri import StoreError

DRIVER_ID = uuid.uuid4().hex[:12]          # this driver process; also names its storage probe
TTL = float(os.environ.get("VAESTUDY_LEASE_TTL", 60))


class LeaseHeld(StoreError):
    """Another live driver holds the study."""


class Lease:
    """`with Lease(store):` holds the study's lease for the block, or raises LeaseHeld."""

    def __init__(self, store, ttl: float = TTL, log=print, stop=None):
        """stop: called once when the lease is lost (default: SIGINT to this process)."""
        self.store, self.ttl, self.log = store, ttl, log
        self.stop = stop or (lambda: os.kill(os.getpid(), signal.SIGINT))
        self.folder = store.path(LEASE_DIR)
        self.gen, self.lost, self.since = 0, False, 0.0
        self._halt = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "Lease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        backend = self.store.backend
        backend.check_conditional(self.folder)
        newest = (generations(self.store) or [0])[-1]
        holder = read(self.store, newest) if newest else None
        if holder is not None and not holder.get("released"):
            if not self._stale(newest, holder):
                raise LeaseHeld(held_line(self.store, holder))
            why = ("its process is gone" if holder.get("host") == socket.gethostname()
                   and not _alive(holder.get("pid", -1)) else
                   f"its lease was not renewed for {holder.get('ttl', self.ttl):.0f} s")
            self.log(f"taking over study {self.store.study!r} from driver pid {holder.get('pid')} "
                     f"on {holder.get('host')}: {why}")
        self.since = time.time()
        path = self.store.path(LEASE_DIR, lease_name(newest + 1))
        if not backend.create(path, self._record()):
            raise LeaseHeld(held_line(self.store, read(self.store, newest + 1) or {}))
        if (read(self.store, newest + 1) or {}).get("driver") != DRIVER_ID:
            raise StoreError(f"storage: {self.store.uri()}: the lease file read back is not this "
                             "driver's: the server does not honour conditional writes")
        self.gen = self.store.fence = newest + 1
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="vaestudy-lease")
        self._beat.start()

    def release(self) -> None:
        self._halt.set()
        if self._beat is not None:
            self._beat.join(timeout=10)
        if self.gen and not self.lost and generations(self.store)[-1:] == [self.gen]:
            self.store.write_bytes(self._path(), self._record(released=True))
        self.gen = 0

    def _path(self) -> str:
        return self.store.path(LEASE_DIR, lease_name(self.gen))

    def _heartbeat(self) -> None:
        last_ok, failing = time.monotonic(), False
        while not self._halt.wait(self.ttl / 4):
            try:
                if self._renew():
                    return
                last_ok, failing = time.monotonic(), False
            except Exception as e:                      # noqa: BLE001 (a storage blip: retry)
                if not failing:
                    self.log(f"lease: cannot renew in {self.store.uri()} ({e}); retrying")
                failing = True
            if time.monotonic() - last_ok > self.ttl / 2:
                self._lose(f"lease lost: not renewed for {time.monotonic() - last_ok:.0f} s "
                           f"(half its {self.ttl:.0f} s lifetime); stopping study "
                           f"{self.store.study!r} before another driver may take it")
                return

    def _renew(self) -> bool:
        """Rewrite our generation; True (the lease is lost) where a newer one exists."""
        newer = [g for g in generations(self.store) if g > self.gen]
        if not newer:
            self.store.write_bytes(self._path(), self._record())
            return False
        holder = read(self.store, newer[-1]) or {}
        self._lose(f"lease lost: driver pid {holder.get('pid')} on {holder.get('host')} took "
                   f"over study {self.store.study!r} (generation {newer[-1]}) after this driver "
                   f"was silent for {self.ttl:.0f} s; stopping")
        return True

    def _lose(self, line: str) -> None:
        self.lost = True
        self.log(line)
        self.stop()

    def _record(self, released: bool = False) -> bytes:
        return json.dumps({"driver": DRIVER_ID, "host": socket.gethostname(), "pid": os.getpid(),
                           "since": self.since, "renewed": time.time(), "ttl": self.ttl,
                           "released": released}).encode()

    def _stale(self, gen: int, holder: dict) -> bool:
        return stale(self.store, gen, holder, self.ttl)


def generations(store) -> list[int]:
    return sorted(int(m[1]) for n in store.listdir(store.path(LEASE_DIR))
                  if (m := LEASE.fullmatch(n)))


def read(store, gen: int) -> dict | None:
    raw = store.read_optional(store.path(LEASE_DIR, lease_name(gen)))
    return None if raw is None else json.loads(raw)


def stale(store, gen: int, holder: dict, ttl: float = TTL) -> bool:
    """Not renewed for its ttl by the storage's clock, or its process is gone (this host)."""
    if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid", -1)):
        return True
    age = store.backend.age(store.path(LEASE_DIR, lease_name(gen)))
    return age is None or age > holder.get("ttl", ttl)


def live_holder(store) -> dict | None:
    """The record of the driver that holds the study now, or None (released, stale, none)."""
    gens = generations(store)
    if not gens:
        return None
    holder = read(store, gens[-1])
    if holder is None or holder.get("released") or stale(store, gens[-1], holder):
        return None
    return holder


def held_line(store, holder: dict) -> str:
    return (f"name: study {store.study!r} is being run by pid {holder.get('pid')} on "
            f"{holder.get('host')} since {time.ctime(holder.get('since', 0))}; wait for it, or "
            f"stop it and `vaestudy resume {store.uri()}` (its lease is taken over once it has "
            f"not been renewed for {holder.get('ttl', TTL):.0f} s)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError, ValueError, TypeError):
        return False
    except PermissionError:                          # exists, owned by someone else
        return True
    return True
