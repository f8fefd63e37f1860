"""Guard rails for a study on a cluster: storage every node sees, GPU shares Ray accounts for.

Driver side, before any trial starts:
- `check_cluster_storage`: joining a cluster with a local storage path is refused unless
  the spec declares it shared (`storage_shared: true`, an NFS mount on every node).
- `check_gpu_share`, `gpu_share`: the GPU share per trial; on a cluster it is set in the
  spec (or a pack's whole GPU), never guessed from the GPUs that happen to be up (none, with
  `min_workers: 0`, which would hide every GPU from the trials).
- `write_probe`: an object in the study storage that every trial looks for.

Trial side, before anything else:
- `check_probe`: a node that cannot see the driver's probe fails the trial at once.
- `follow_gpu_share`: a share of 0 hides the GPUs (CUDA_VISIBLE_DEVICES=""), so `device:
  auto` means cpu; a share above 0 needs a visible GPU.
"""
from __future__ import annotations

import os
import json
import socket
import time

from study.inputs import UsageError
from resultstore import uri as uris
from resultstore.lease import DRIVER_ID
from resultstore.store import ResultStore

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
    from trainables.train import FatalTrialError          # trial side: torch is loaded there

    try:
        raw = store.read_optional(store.path(PROBE))        # one request, no check first
        seen = json.loads(raw).get("driver") if raw is not None else None
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
    """resources.gpu if set; on one machine (a private Ray) LOCAL_GPU_SHARE where it has GPUs,
    0 without. On a cluster it must be set (`check_gpu_share`): no public Ray API tells the
    GPUs of node types that have no node up yet, and a guess of 0 hides every GPU."""
    import ray

    if spec.gpu is not None:
        return spec.gpu
    check_gpu_share(spec, address)
    if joining(address) is not None:                     # a pack, on a cluster
        return 1.0
    return LOCAL_GPU_SHARE if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def check_gpu_share(spec, address: str | None) -> None:
    """Before anything is written: a study joined to a cluster states its GPU share (a
    pack's default is a whole GPU)."""
    where = joining(address)
    if where is None or spec.gpu is not None or spec.pack:
        return
    raise UsageError(f"resources.gpu: not set, and the study joins the Ray cluster at {where}, "
                     "whose GPU nodes may not be up yet; set the GPU share per trial, e.g. "
                     "resources.gpu: 0.25 for four trials per GPU, or 0 for CPU only")


def follow_gpu_share(share: float, node: str) -> None:
    """In the trial's process, before torch initialises CUDA: the device follows the share."""
    import torch

    from trainables.train import FatalTrialError

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
