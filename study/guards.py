"""Guard rails for a study on a cluster: storage every node sees, GPU shares Ray accounts for.

Driver side, before any trial starts:
- `check_cluster_storage`: joining a cluster with a local storage path is refused unless
  the spec declares it shared (`storage_shared: true`, an NFS mount on every node).
- `gpu_share`: the GPU share per trial; on a cluster, set in the spec or derived from the
  cluster's node types, never from the GPUs that happen to be up (none, with `min_workers: 0`).
- `write_probe`: an object in the study storage that every trial looks for.

Trial side, before anything else:
- `check_probe`: a node that cannot see the driver's probe fails the trial at once.
- `follow_gpu_share`: a share of 0 hides the GPUs (CUDA_VISIBLE_DEVICES=""), so `device:
  auto` means cpu; a share above 0 needs a visible GPU.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time

from study.inputs import UsageError
from resultstore import uri as uris
from resultstore.lease import DRIVER_ID
from resultstore.store import ResultStore
from trainables.train import FatalTrialError

PROBE = "probe.json"
LOCAL_GPU_SHARE = 0.25                  # one machine with GPUs: four small trials per card


# ---- storage -----------------------------------------------------------------------------

def joining(address: str | None) -> str | None:
    """The cluster address the driver joins (--address or RAY_ADDRESS), or None for a local Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    return None if address in (None, "", "local") else address


def check_cluster_storage(spec, root: str, address: str | None) -> None:
    where = joining(address)
    if where is None or uris.kind(root) != "local" or spec.storage_shared:
        return
    raise UsageError(f"storage: {root!r} is a local path and the study joins the Ray cluster at "
                     f"{where}: each node would write to its own disk; use s3:// or gs://, or an "
                     "NFS path mounted on every node and declare it with storage_shared: true")


def write_probe(store: ResultStore) -> None:
    store.write_json(store.path(PROBE), {"driver": DRIVER_ID, "host": socket.gethostname(),
                                         "written": time.time()})


def check_probe(store: ResultStore, driver: str, node: str) -> None:
    """Raise FatalTrialError where this node does not see the probe of the study's driver."""
    try:
        seen = store.read_json(store.path(PROBE)).get("driver") \
            if store.exists(store.path(PROBE)) else None
        why = "no probe" if seen is None else f"another driver's probe ({seen})"
    except (OSError, ValueError) as e:
        seen, why = None, f"unreadable probe ({e})"
    if seen != driver:
        raise FatalTrialError(
            f"storage: node {node} cannot see the study storage {store.uri()} ({why} where "
            f"the driver wrote {driver}); every node must reach the same storage: s3://, gs://, "
            "or an NFS path mounted on every node")


# ---- GPU shares --------------------------------------------------------------------------

def gpu_share(spec, address: str | None) -> float:
    """resources.gpu if set; else on one machine 0.25 where it has GPUs (0 without); on a
    cluster the share that fills a GPU node type's CPUs (`derive_share`)."""
    import ray

    if spec.gpu is not None:
        return spec.gpu
    if joining(address) is None:
        return LOCAL_GPU_SHARE if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    types = node_types()
    share = None if types is None else derive_share(types, spec.cpu)
    if share is None:
        raise UsageError("resources.gpu: not set, and the cluster's node types cannot be read "
                         "(no autoscaler config on this machine or in the cluster); set "
                         "resources.gpu, e.g. 0.25 for four trials per GPU or 0 for CPU only")
    return share


def derive_share(types: list[dict], cpu: float) -> float | None:
    """The smallest share that gives each CPU slot of a GPU node type its part of the GPUs:
    GPU / floor(CPU / cpu) per node type (an integer when above 1, as Ray needs); 0 when no
    node type has GPUs; None when no node type has any resources."""
    shares = []
    for r in types:
        gpus, slots = r.get("GPU", 0), math.floor(r.get("CPU", 0) / cpu + 1e-9)
        if gpus > 0 and slots > 0:
            s = gpus / slots
            shares.append(float(math.floor(s)) if s > 1 else round(s, 4))
    if shares:
        return min(shares)
    return 0.0 if any(r.get("CPU", 0) > 0 for r in types) else None


def node_types() -> list[dict] | None:
    """Resources of every node type the cluster has or can start, or None when unknown.

    In order: the autoscaler's config in the GCS (autoscaler v2, KubeRay); the cluster
    launcher's ~/ray_bootstrap_config.yaml on this machine (the head, where `ray job submit`
    runs the driver; resources filled from the instance types); the nodes alive when no
    autoscaler runs (a cluster of `ray start` nodes is all it will ever be)."""
    types = _gcs_node_types() or _bootstrap_node_types()
    if types:
        return types
    if _autoscaler_running():
        return None
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def _gcs_node_types() -> list[dict] | None:
    from ray._private import state

    try:
        config = state.state.get_cluster_config()
    except Exception:                                    # noqa: BLE001 (private API)
        return None
    if config is None:
        return None
    return [dict(g.resources) for g in config.node_group_configs
            if g.resources and g.max_count != 0] or None


def _bootstrap_node_types(path: str = "~/ray_bootstrap_config.yaml") -> list[dict] | None:
    import yaml

    path = os.path.expanduser(path)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        config = yaml.safe_load(f) or {}
    types = config.get("available_node_types") or {}
    return [dict(t.get("resources") or {}) for name, t in types.items()
            if name == config.get("head_node_type") or t.get("max_workers", 1) > 0] or None


def _autoscaler_running() -> bool:
    """Whether an autoscaler may start nodes. `ray start --head` runs one with a read-only
    provider whose node types are the nodes themselves (`node_<id>`); that one never does."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get

    try:
        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    except Exception:                                    # noqa: BLE001 (private API)
        return True                                      # unknown: do not guess
    report = json.loads(status).get("autoscaler_report") if status else None
    if not report:
        return False
    names = {*(report.get("active_nodes") or {}), *(report.get("idle_nodes") or {}),
             *(report.get("pending_launches") or {})}
    return not all(n.startswith("node_") for n in names)


def follow_gpu_share(share: float, node: str) -> None:
    """In the trial's process, before torch initialises CUDA: the device follows the share."""
    import torch

    if share == 0:
        if torch.cuda.is_initialized():
            raise FatalTrialError("resources.gpu: 0, but CUDA is already initialised in this "
                                  "worker; the GPUs cannot be hidden from the trial")
        os.environ["CUDA_VISIBLE_DEVICES"] = ""          # Ray leaves it as is for 0 GPUs
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"resources.gpu: the trial was given {share} of a GPU on node {node}, "
                           "but no GPU is visible there (CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); check the node's driver")
