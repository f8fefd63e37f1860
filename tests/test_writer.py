"""The background writer: submission order, a bounded queue, errors raised on flush."""
import threading
import time

import pytest

from trainables.writer import Writer


def test_jobs_run_in_order_off_the_calling_thread():
    done, threads = [], set()
    with Writer(depth=2) as w:
        for i in range(20):
            w.submit(lambda i=i: (done.append(i), threads.add(threading.get_ident())))
        w.flush()
    assert done == list(range(20))
    assert threads and threading.get_ident() not in threads


def test_submit_blocks_while_the_queue_is_full():
    gate = threading.Event()
    with Writer(depth=1) as w:
        w.submit(gate.wait)                  # taken by the thread, which then waits
        time.sleep(0.1)
        w.submit(lambda: None)               # fills the queue
        t0 = time.perf_counter()
        threading.Timer(0.3, gate.set).start()
        w.submit(lambda: None)               # must wait for the gate
        assert time.perf_counter() - t0 >= 0.25
        w.flush()


def test_a_failed_write_is_raised_on_flush_and_later_writes_are_dropped():
    done = []

    def fail():
        raise OSError("disk full")

    w = Writer()
    w.submit(done.append, 1)
    w.submit(fail)
    w.submit(done.append, 2)                 # e.g. a checkpoint after a lost segment
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    w.close()
    assert done == [1]
