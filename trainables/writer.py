"""Store writes off the training thread: one background thread, a bounded FIFO of jobs.

The training loop submits each write (a segment, a checkpoint, a traversal) and goes
on training; the writer runs them in submission order, so a segment still reaches
storage before the checkpoint that follows it (the store's no-loss argument). At
most `depth` jobs wait: a storage slower than training makes `submit` block instead
of letting memory grow. `flush` waits until every submitted job is on storage and
raises the first write error there, on the training thread; after an error the later
jobs are dropped, so no checkpoint is written past a segment that was not.

A trial flushes before every report to Tune (a scheduler may stop it at any report)
and before it ends.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable


class Writer:
    def __init__(self, depth: int = 8):
        self.jobs: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)
        self.thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._raise()
        self.jobs.put((fn, args))            # blocks while `depth` jobs wait

    def flush(self) -> None:
        """Return once every submitted write is on storage; raise the first that failed."""
        self.jobs.join()
        self._raise()

    def close(self) -> None:
        """Stop the thread after the jobs already submitted (errors are left to `flush`)."""
        self.jobs.put(None)
        self.thread.join()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, args = job
            try:
                if self.error is None:
                    fn(*args)
            except BaseException as e:       # reported on the training thread by flush
                self.error = e
            finally:
                self.jobs.task_done()
        self.jobs.task_done()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error


class SyncWriter:
    """The same interface, writing at once on the calling thread (a pack's members, whose
    writes are interleaved with other members' steps by the pack's own loop)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        fn(*args)

    def flush(self) -> None:
        pass
