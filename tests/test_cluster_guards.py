"""Guard rails on a real two-node Ray cluster on loopback (see test_cluster.py).

The worker node runs in a mount namespace of its own with an empty tmpfs over the
results folder: on one machine, exactly what a node with its own disk sees when a
spec says `storage_shared: true` for a path that is not shared.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from test_cluster import RAYSTART, Cluster, Driver, _spec
from resultstore.store import ResultStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return r.returncode == 0


class BlindCluster(Cluster):
    """A worker node that cannot see `hidden` (an empty tmpfs over it)."""

    def start_blind_worker(self, hidden: str) -> None:
        cmd = " ".join([*RAYSTART, "start", "--block", "--node-ip-address=127.0.0.1",
                        "--num-cpus=1", "--disable-usage-stats", f"--address={self.address}"])
        script = f"mkdir -p {hidden} && mount -t tmpfs tmpfs {hidden} && exec {cmd}"
        log = open(self.env["HOME"] + "/worker.log", "w")
        self.nodes["worker"] = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=self.env,
            stdout=log, stderr=log, start_new_session=True)


@pytest.fixture
def blind_cluster(tmp_path):
    if not _can_unshare():
        pytest.skip("needs root and unshare -m to give a node a disk of its own")
    root = tmp_path / "shared"
    root.mkdir()
    c = BlindCluster(tmp_path)
    try:
        c.start_node("head", head=True)
        c.head_id = next(iter(c.wait_nodes(1)))
        c.start_blind_worker(str(root))
        c.nodes_alive = c.wait_nodes(2)
        c.worker_id = next(n for n in c.nodes_alive if n != c.head_id)
        c.root = root
        yield c
    finally:
        c.stop()


def test_trials_on_a_node_that_cannot_see_the_storage_fail_at_once(blind_cluster, tmp_path):
    c = blind_cluster
    d = Driver(c, tmp_path, "run", str(_spec(tmp_path / "s.yaml", "blind", 3)), "--out",
               str(c.root))
    out = d.wait()
    assert d.p.returncode == 1, out[-3000:]              # some trials failed
    store = ResultStore(str(c.root), "blind")
    states = {s["trial_id"]: s for s in store.all_status()}
    failed = [s for s in states.values() if s["state"] == "failed"]
    assert failed, "no trial ran on the blind node"
    for s in failed:
        assert s["error"].startswith("storage: node ") and c.worker_id[:12] in s["error"]
        assert f"cannot see the study storage {store.uri()} (no probe" in s["error"]
        assert "attempts" not in s                       # it never started training
    completed = {t for t, s in states.items() if s["state"] == "completed"}
    if not completed:           # the blind node failed each trial at once and took them all
        assert not list((c.root / "blind").glob("trials/**/*.parquet"))
        return
    rows = pl.read_parquet(store.glob("trials"))
    assert set(rows["trial_id"]) == completed
    assert {n.split("/")[-1] for n in rows["node"]} == {c.head_id[:12]}
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height


def test_gpu_share_is_derived_from_a_cluster_without_an_autoscaler(tmp_path):
    """`ray start` nodes only (no autoscaler): the nodes alive are its node types; no GPU
    on them, so trials ask for none (and do not wait for a GPU that never comes)."""
    c = Cluster(tmp_path)
    try:
        c.start_node("head", head=True)
        c.wait_nodes(1)
        code = ("import sys; sys.path.insert(0, %r); from study import guards, runner; "
                "from study.spec import parse; runner.start_ray(%r, log=lambda s: None); "
                "print(guards.node_types()); print(guards.gpu_share(parse({'name': 'x'}), %r))"
                ) % (str(ROOT), c.address, c.address)
        r = subprocess.run([sys.executable, "-c", code], env=c.env, capture_output=True,
                           text=True, timeout=180)
    finally:
        c.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    types, share = r.stdout.strip().splitlines()[-2:]
    assert "'CPU': 1.0" in types and share == "0.0"


def _start_autoscaling_head(c: Cluster, config: dict) -> None:
    """A head with Ray's own autoscaler (its fake multi-node provider: nodes would be local
    processes; with min_workers 0 and no demand it starts none)."""
    path = Path(c.env["HOME"]) / "autoscaling.yaml"
    path.write_text(yaml.safe_dump(config))
    c.env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
    cmd = [*RAYSTART, "start", "--block", "--head", f"--port={c.port}", "--num-cpus=1",
           "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
           f"--autoscaling-config={path}"]
    log = open(c.env["HOME"] + "/head.log", "w")
    c.nodes["head"] = subprocess.Popen(cmd, env=c.env, stdout=log, stderr=log,
                                       start_new_session=True)


FAKE_LAUNCHER = {                # Ray's fake_multi_node/example.yaml, which its wheel lacks
    "cluster_name": "fake", "max_workers": 2, "upscaling_speed": 1, "idle_timeout_minutes": 1,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                 "disable_node_updaters": True, "disable_launch_config_check": True},
    "head_node_type": "ray.head.default", "auth": {"ssh_user": "ubuntu"},
    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
    "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
    "head_start_ray_commands": [], "worker_start_ray_commands": []}

GPU_SHARE = ("import sys; sys.path.insert(0, %r); from study import guards, runner; "
             "from study.spec import parse; from study.inputs import UsageError; "
             "runner.start_ray(%r, log=lambda s: None); import time; time.sleep(%d)\n"
             "try: print(guards.gpu_share(parse({'name': 'x'}), %r))\n"
             "except UsageError as e: print(e)")


def test_gpu_share_on_an_autoscaling_cluster_comes_from_its_node_types(tmp_path):
    """Ray's own autoscaler whose GPU node type has no node up: the share is not 0 (the bug:
    trials on GPU nodes with no GPU of Ray's); it comes from the launcher's bootstrap config
    where the driver runs on the head, and is refused where node types cannot be read."""
    config = {**FAKE_LAUNCHER, "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "node_config": {},
                       "min_workers": 0, "max_workers": 2}}}
    c = Cluster(tmp_path)
    try:
        _start_autoscaling_head(c, config)
        c.wait_nodes(1)
        outs = []
        for wait, bootstrap in ((5, False), (0, True)):
            if bootstrap:                                # as `ray up` leaves it on the head
                (Path(c.env["HOME"]) / "ray_bootstrap_config.yaml").write_text(
                    yaml.safe_dump(config))
            code = GPU_SHARE % (str(ROOT), c.address, wait, c.address)
            r = subprocess.run([sys.executable, "-c", code], env=c.env, capture_output=True,
                               text=True, timeout=180)
            assert r.returncode == 0, r.stderr[-3000:]
            outs.append(r.stdout.strip().splitlines()[-1])
    finally:
        c.stop()
    assert outs[0].startswith("resources.gpu: not set, and the cluster's node types cannot "
                              "be read"), outs
    assert outs[1] == "0.25", outs
