"""Guard rails on a real two-node Ray cluster on loopback (see test_cluster.py).

The worker node runs in a mount namespace of its own with an empty tmpfs over the
results folder: on one machine, exactly what a node with its own disk sees when a
spec says `storage_shared: true` for a path that is not shared.
"""
import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

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
