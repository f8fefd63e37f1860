"""The driver lease on a local folder and on S3 (a real moto server on loopback): two drivers
started at the same instant, a stale lease from a dead driver, a live one, a lost one, a
clock skew, fencing of a lost driver's trials, and a server that ignores If-None-Match."""
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from resultstore import lease as leases
from resultstore.lease import Lease, LeaseHeld
from resultstore.store import ResultStore
from resultstore.trial import FencedOut
from support.faultproxy import FaultProxy



@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A results root: a local folder, or a fresh bucket on the module's S3 server."""
    if request.param == "local":
        return str(tmp_path / "res")
    import boto3

    endpoint = request.getfixturevalue("moto_server")
    bucket = "lease-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=f"http://{endpoint}").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/res?endpoint_override={endpoint}&scheme=http&region=us-east-1"


def _try(root, barrier, done, out):
    """A driver process: wait for the other, take the lease, hold it until the test is done."""
    lease = Lease(ResultStore(root, "s"), ttl=30, log=lambda s: None)
    barrier.wait()
    try:
        lease.acquire()
    except LeaseHeld as e:
        out.put(("refused", str(e)))
        return
    out.put(("holds", os.getpid()))
    done.wait(60)
    lease.release()


def _records(root) -> dict[int, dict]:
    store = ResultStore(root, "s")
    return {g: leases.read(store, g) for g in leases.generations(store)}


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
        assert all(r["released"] for r in _records(root).values())      # released, kept
    assert sorted(_records(root)) == [1, 2, 3, 4]                        # generations only grow


def _plant(root, gen=1, **holder):
    store = ResultStore(root, "s")
    store.backend.create(store.path("lease", f"driver-{gen:06d}.json"), json.dumps(holder).encode())
    return store


def test_a_stale_lease_is_taken_over_by_the_storage_clock(root):
    """Stale: its file is older than its ttl as the storage tells it (here ttl 1 s)."""
    _plant(root, host="gone-host", pid=4242, since=0, renewed=time.time(), ttl=1)
    time.sleep(2.2)                                    # S3's LastModified has 1 s resolution
    said = []
    with Lease(ResultStore(root, "s"), log=said.append) as held:
        assert held.gen == 2
    assert len(said) == 1
    assert said[0].startswith("taking over study 's' from driver pid 4242 on gone-host: its "
                              "lease was not renewed for 1 s")
    assert sorted(_records(root)) == [1, 2] and _records(root)[2]["released"]


def test_a_clock_skew_does_not_take_over_a_live_lease(root):
    """The holder's own timestamp says 10 minutes ago (its clock is behind), but it renewed
    just now by the storage's clock: it is live."""
    _plant(root, host="busy-host", pid=4242, since=time.time(), renewed=time.time() - 600, ttl=60)
    with pytest.raises(LeaseHeld, match="study 's' is being run by pid 4242 on busy-host"):
        Lease(ResultStore(root, "s")).acquire()
    assert sorted(_records(root)) == [1]


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
    with Lease(store, ttl=0.8) as held:
        time.sleep(2.5)                                     # three ttls
        assert store.backend.age(store.path("lease", "driver-000001.json")) < 0.8
        with pytest.raises(LeaseHeld, match="is being run by pid"):
            Lease(store, ttl=0.8).acquire()
        assert held.gen == 1 and not held.lost


def _stopped():
    import threading
    return threading.Event()


def test_a_driver_whose_lease_was_taken_over_stops_and_its_trials_are_fenced(tmp_path):
    said, stopped = [], _stopped()
    store = ResultStore(str(tmp_path), "s")
    lease = Lease(store, ttl=0.4, log=said.append, stop=stopped.set)
    lease.acquire()
    trial = ResultStore(str(tmp_path), "s", fence=lease.gen).trial("t1")   # a trial's process
    trial.append({"factors": [_factor(1)]}, 1, 1)
    try:
        _plant(str(tmp_path), gen=2, host="other-host", pid=7, renewed=time.time(), ttl=60)
        assert stopped.wait(5)                              # as Ctrl-C: Tune stops the trials
        assert lease.lost
        with pytest.raises(FencedOut, match="taken over by a newer driver"):
            trial.append({"factors": [_factor(2)]}, 2, 2)
        with pytest.raises(FencedOut):
            trial.rollback(0)                               # a stale attempt deletes nothing
    finally:
        lease.release()
    assert said and said[0].startswith("lease lost: driver pid 7 on other-host took over")
    assert [p[:2] for p in trial.parts("factors")] == [(1, 1)]
    assert not _records(str(tmp_path))[1]["released"]      # a lost lease is not released
    assert sorted(_records(str(tmp_path))) == [1, 2]        # the new holder's stays


def test_a_driver_that_cannot_renew_for_half_its_ttl_stops(tmp_path):
    """The storage refuses the renewals (the lease folder is replaced by a file): the driver
    stops itself before ttl, when another driver may take over."""
    said, stopped = [], _stopped()
    store = ResultStore(str(tmp_path), "s")
    lease = Lease(store, ttl=1.0, log=said.append, stop=stopped.set)
    lease.acquire()
    import shutil
    shutil.rmtree(store.path("lease"))
    open(store.path("lease"), "w").close()
    t0 = time.monotonic()
    try:
        assert stopped.wait(5)
        assert time.monotonic() - t0 < 1.0 + 0.3          # within ttl (half of it, one beat)
    finally:
        lease.release()
    assert lease.lost
    assert any(line.startswith("lease lost: not renewed for") for line in said), said


def test_a_server_that_ignores_if_none_match_is_refused(moto_server):
    import boto3

    bucket = "lease-" + uuid.uuid4().hex[:12]
    boto3.client("s3", endpoint_url=f"http://{moto_server}").create_bucket(Bucket=bucket)
    with FaultProxy(moto_server) as proxy:
        proxy.drop_header("If-None-Match")
        root = f"s3://{bucket}/res?endpoint_override={proxy.endpoint}&scheme=http&region=us-east-1"
        with pytest.raises(leases.StoreError, match="ignores conditional writes"):
            Lease(ResultStore(root, "s")).acquire()
    assert _records(root.replace(proxy.endpoint, moto_server)) == {}


def _factor(epoch: int) -> dict:
    return {"study": "s", "trial_id": "t1", "epoch": epoch, "factor": 0, "mi": 0.1,
            "post_var": 1.0, "qstar_var": 1.0, "used": False}
