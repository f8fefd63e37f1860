"""A real two-node Ray cluster on loopback, with token authentication on.

Both nodes run on this machine at 127.0.0.1 (tests/support/raystart.py keeps
Ray from swapping in the outward address), each under `ray start --block` in
its own process group, so a node can be killed alone and both are always
stopped, also when a test fails.
"""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from resultstore.store import ResultStore
from study.raypatch import LOOPBACK_ONLY

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
RAYSTART = [sys.executable, str(HERE / "support" / "raystart.py")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        home = tmp / "home"
        (home / ".ray").mkdir(parents=True)
        token = home / ".ray" / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        # token auth on, the token only in this test's HOME, and never the outward address
        self.env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token",
                    "RAY_AIR_NEW_OUTPUT": "0"}
        # a study run in this test process before (a private local Ray) leaves the flag
        # that keeps Ray single-node in os.environ; nodes that inherit it never join
        self.env.pop(LOOPBACK_ONLY, None)
        self.nodes: dict[str, subprocess.Popen] = {}

    def start_node(self, name: str, head: bool, cpus: int = 1) -> None:
        where = ["--head", f"--port={self.port}", "--include-dashboard=false"] if head \
            else [f"--address={self.address}"]
        cmd = [*RAYSTART, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
               "--disable-usage-stats", *where]
        log = open(self.env["HOME"] + f"/{name}.log", "w")
        self.nodes[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log,
                                            start_new_session=True)

    def wait_nodes(self, n: int, timeout: float = 90) -> dict[str, str]:
        """{node id: ip} once n nodes are alive."""
        code = ("import json, sys; sys.path.insert(0, %r); from study.runner import start_ray;"
                "import ray; start_ray(%r, log=lambda s: None);"
                "print(json.dumps({x['NodeID']: x['NodeManagerAddress'] for x in ray.nodes()"
                " if x['Alive']}))") % (str(HERE.parent), self.address)
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True,
                               text=True, timeout=120)
            if r.returncode == 0:
                alive = json.loads(r.stdout.strip().splitlines()[-1])
                if len(alive) >= n:
                    return alive
            time.sleep(1)
        raise AssertionError(f"{n} nodes not alive within {timeout} s")

    def kill(self, name: str) -> None:
        p = self.nodes.pop(name, None)
        if p is not None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()

    def stop(self) -> None:
        for name in list(self.nodes):
            self.kill(name)


def _two_nodes(tmp_path, head_cpus: int):
    """A head (with `head_cpus` CPUs for trials) and one worker, stopped afterwards."""
    c = Cluster(tmp_path)
    try:
        c.start_node("head", head=True, cpus=head_cpus)
        c.head_id = next(iter(c.wait_nodes(1)))
        c.start_node("worker", head=False)
        c.nodes_alive = c.wait_nodes(2)
        c.worker_id = next(n for n in c.nodes_alive if n != c.head_id)
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(tmp_path):
    yield from _two_nodes(tmp_path, head_cpus=1)


def _spec(path: Path, name: str, epochs: int, n: int = 600, delay: float = 0) -> Path:
    path.write_text(f"""
name: {name}
seeds: [0, 1, 2, 3]
dataset: {{name: intrinsic, n: {n}, factors: 2}}
model: {{latent_dim: 3}}
train: {{epochs: {epochs}, fault_epoch_delay: {delay}}}
eval: {{every: 1, traversals: false}}
checkpoint: {{every: 2}}
failure: {{max_retries: 2}}
resources: {{cpu: 1, gpu: 0}}   # a cluster needs its GPU share said
max_concurrent: 2
storage_shared: true           # both nodes on one machine: one disk
""")
    return path


class Driver:
    """`vaestudy` as a subprocess joined to the cluster; its output goes to a file."""

    def __init__(self, cluster, tmp: Path, *args):
        self.log = tmp / "driver.log"
        with open(self.log, "w") as f:
            self.p = subprocess.Popen([sys.executable, "-m", "study.cli", *args, "--address",
                                       cluster.address, "--no-report"], env=cluster.env,
                                      stdout=f, stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 600) -> str:
        try:
            self.p.wait(timeout=timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
        return self.log.read_text()


def _exactly_once(store: ResultStore, n_trials: int, epochs: int) -> pl.DataFrame:
    rows = pl.read_parquet(store.glob("trials"))
    assert rows.height == n_trials * epochs
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height
    assert all(s["state"] == "completed" for s in store.all_status())
    return rows


def test_a_study_on_two_nodes_uses_both(cluster, tmp_path):
    root = tmp_path / "shared"            # storage both nodes see (one machine: one disk)
    d = Driver(cluster, tmp_path, "run", str(_spec(tmp_path / "s.yaml", "two", 3)), "--out",
               str(root))
    out = d.wait()
    assert d.p.returncode == 0, out[-3000:]
    store = ResultStore(str(root), "two")
    rows = _exactly_once(store, 4, 3)
    nodes = {n.split("/")[-1] for n in rows["node"].unique()}
    assert nodes == {nid[:12] for nid in cluster.nodes_alive}, (nodes, cluster.nodes_alive)
    assert "joining the Ray cluster at 127.0.0.1" in out
    # no actor reuse on a cluster (study/tuner.py): each trial ran in a process of its own
    final = out[out.rindex("Number of trials"):]
    pids = set(re.findall(r"TERMINATED \| 127\.0\.0\.1:(\d+) ", final))
    assert len(pids) == 4, final


@pytest.fixture
def worker_only(tmp_path):
    """A head with no CPU for trials and one worker: every trial runs on a worker by Ray's
    resource accounting, not by timing (a loaded machine cannot move one to the head)."""
    yield from _two_nodes(tmp_path, head_cpus=0)


def test_a_killed_worker_node_costs_no_result(worker_only, tmp_path):
    """The only node with CPUs dies mid-trial; a second worker joins: the trial continues
    there from its checkpoint, and every epoch is stored exactly once."""
    cluster = worker_only
    root = tmp_path / "shared"
    store = ResultStore(str(root), "lost")
    spec = _spec(tmp_path / "s.yaml", "lost", 8, n=2500, delay=0.5)   # 3 s left at a kill
    d = Driver(cluster, tmp_path, "run", str(spec), "--out", str(root))
    deadline, victim = time.time() + 300, None
    while time.time() < deadline and victim is None and d.p.poll() is None:
        for st in store.all_status() if store.exists(store.path("status")) else []:
            if st["state"] == "running" and store.trial(st["trial_id"]).checkpoints():
                victim = st["trial_id"]
        time.sleep(0.2)
    assert victim, "no trial reached a checkpoint on the worker node"
    assert store.status(victim)["node"].split("/")[-1] == cluster.worker_id[:12]
    cluster.kill("worker")                         # the node dies mid-trial
    assert store.status(victim)["state"] == "running"
    cluster.start_node("worker2", head=False)      # where the study goes on
    out = d.wait()
    assert d.p.returncode == 0, out[-3000:]
    rows = _exactly_once(store, 4, 8)
    assert store.status(victim)["attempts"] >= 2
    moved = rows.filter(pl.col("trial_id") == victim)
    assert moved["node"].n_unique() == 2           # it finished on the second worker
