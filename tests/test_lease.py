"""The driver lease on a local folder and on S3 (a real moto server on loopback): two drivers
started at the same instant, a stale lease from a dead driver, a live one, a lost one."""
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from study.inputs import UsageError
from study.lease import Lease
from trainables.store import ResultStore

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_server():
    """One moto S3 server on 127.0.0.1 for this module (no credentials of anyone's)."""
    from moto.server import ThreadedMotoServer

    old = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield "%s:%d" % server.get_host_and_port()
    finally:
        server.stop()
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A results root: a local folder, or a fresh bucket on the module's S3 server."""
    if request.param == "local":
        return str(tmp_path / "res")
    import boto3

    endpoint = request.getfixturevalue("s3_server")
    bucket = "lease-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/res?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def _try(root, barrier, done, out):
    """A driver process: wait for the other, take the lease, hold it until the test is done."""
    lease = Lease(ResultStore(root, "s"), ttl=30, log=lambda s: None)
    barrier.wait()
    try:
        lease.acquire()
    except UsageError as e:
        out.put(("refused", str(e)))
        return
    out.put(("holds", os.getpid()))
    done.wait(60)
    lease.release()


def test_two_drivers_started_at_the_same_instant_one_is_refused(root):
    ctx = mp.get_context("fork")
    for _ in range(4):
        barrier, done, out = ctx.Barrier(2), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_try, args=(root, barrier, done, out)) for _ in range(2)]
        for p in procs:
            p.start()
        try:
            results = [out.get(timeout=60) for _ in procs]
        finally:
            done.set()
            for p in procs:
                p.join(60)
        assert sorted(r[0] for r in results) == ["holds", "refused"], results
        winner = next(r[1] for r in results if r[0] == "holds")
        refusal = next(r[1] for r in results if r[0] == "refused")
        assert f"study 's' is being run by pid {winner} on {socket.gethostname()}" in refusal
        assert refusal.count("\n") == 0
        assert Lease(ResultStore(root, "s")).files.names() == []       # released


def _plant(root, **holder):
    lease = Lease(ResultStore(root, "s"))
    lease.files.create("driver-000001.json", json.dumps(holder).encode())
    return lease.files


def test_a_stale_lease_of_a_dead_driver_on_another_host_is_taken_over(root):
    files = _plant(root, host="gone-host", pid=4242, since=0, renewed=time.time() - 600, ttl=60)
    said = []
    with Lease(ResultStore(root, "s"), log=said.append):
        assert files.names() == ["driver-000002.json"]
    assert len(said) == 1
    assert said[0].startswith("taking over study 's' from driver pid 4242 on gone-host: its "
                              "lease was last renewed 600 s ago (stale after 60 s)")
    assert files.names() == []


def test_a_live_lease_on_another_host_is_not_taken_over(root):
    files = _plant(root, host="busy-host", pid=4242, since=time.time(), renewed=time.time() - 5,
                   ttl=60)
    with pytest.raises(UsageError, match="study 's' is being run by pid 4242 on busy-host"):
        Lease(ResultStore(root, "s")).acquire()
    assert files.names() == ["driver-000001.json"]


def test_a_dead_driver_on_this_host_is_taken_over_without_waiting(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _plant(str(tmp_path), host=socket.gethostname(), pid=gone.pid, since=0,
           renewed=time.time(), ttl=60)
    said = []
    with Lease(ResultStore(str(tmp_path), "s"), log=said.append):
        pass
    assert len(said) == 1 and f"from driver pid {gone.pid}" in said[0]


def test_the_heartbeat_keeps_the_lease_fresh_past_its_ttl(tmp_path):
    store = ResultStore(str(tmp_path), "s")
    with Lease(store, ttl=0.4) as held:
        time.sleep(1.2)                                     # three ttls
        record = json.loads(held.files.read("driver-000001.json"))
        assert time.time() - record["renewed"] < 0.4
        with pytest.raises(UsageError, match="is being run by pid"):
            Lease(store, ttl=0.4).acquire()


def test_a_driver_whose_lease_was_taken_over_stops(tmp_path):
    import signal

    # Python's own SIGINT handler: a Tune run earlier in this process leaves Tune's installed,
    # which swallows the signal instead of raising KeyboardInterrupt outside a Tune run.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    said = []
    lease = Lease(ResultStore(str(tmp_path), "s"), ttl=0.4, log=said.append)
    lease.acquire()
    try:
        lease.files.create("driver-000002.json", json.dumps(
            {"host": "other-host", "pid": 7, "renewed": time.time()}).encode())
        with pytest.raises(KeyboardInterrupt):              # as Ctrl-C: Tune stops the trials
            time.sleep(5)
    finally:
        lease.release()
        signal.signal(signal.SIGINT, before)
    assert said and said[0].startswith("lease lost: driver pid 7 on other-host took over")
    assert "driver-000002.json" in lease.files.names()       # the new holder's stays
