"""Every patch of Ray's private internals, in one place, each with its reason.

Checked against the Ray versions they were written for (TESTED, the range
pyproject.toml allows): on another version a patch still applies when the
attribute it replaces exists, and says so on stderr, so an upgrade that moves it
fails loudly here instead of silently leaving a node on the wrong address.
tests/test_raypatch.py checks what each patch changes, not only that its name
exists, so a Ray that changes the behaviour fails there.

Why no public API: Ray documents `ray start --node-ip-address` and
`ray.init(address=...)`, but from 2.5x it replaces a loopback address by the
machine's outward one in both (`services.resolve_ip_for_localhost`), with no
setting to keep it; a node started on 127.0.0.1 then advertises an address it
does not listen on. The macOS/Windows switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
is the one documented way Ray itself keeps a single-node Ray on loopback.
"""
from __future__ import annotations

import os
import sys

TESTED = ((2, 52), (2, 60))             # lowest and highest (major, minor) the suite passed on
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": a node's address stays 127.0.0.1


def minor(version: str) -> tuple[int, int]:
    """'2.60.0' -> (2, 60); '2.6.3' -> (2, 6), never mistaken for 2.60."""
    major, minor_, *_ = version.split(".")
    return int(major), int("".join(c for c in minor_ if c.isdigit()) or 0)


def _check(module, attr: str) -> None:
    import ray

    if not hasattr(module, attr):
        raise RuntimeError(f"Ray {ray.__version__}: {module.__name__}.{attr} is gone; "
                           "study/raypatch.py needs updating for this Ray")
    if not TESTED[0] <= minor(ray.__version__) <= TESTED[1]:
        print(f"vaestudy: patching {module.__name__}.{attr} of an untested Ray "
              f"{ray.__version__}", file=sys.stderr)


def keep_loopback_address() -> None:
    """Joining a cluster whose nodes run on 127.0.0.1 (tests, one-machine clusters): Ray 2.60
    swaps a loopback node address for the machine's outward one, which those nodes do not
    listen on. Keep the address as given."""
    from ray._private import services

    _check(services, "resolve_ip_for_localhost")
    services.resolve_ip_for_localhost = lambda host: host


def private_single_node() -> None:
    """A private local Ray stays on loopback: Ray reads this flag from the environment in the
    processes it starts, and from `ray_constants` (imported already) in this one."""
    from ray._private import ray_constants

    _check(ray_constants, "ENABLE_RAY_CLUSTER")
    os.environ[LOOPBACK_ONLY] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def loopback_node() -> dict:
    """`ray.init` keywords that keep this driver's node address on loopback where its
    cluster's nodes run on 127.0.0.1: `_node_ip_address` is the keyword form of
    `ray start --node-ip-address`, which `ray.init` has only as a private argument."""
    return {"_node_ip_address": "127.0.0.1"}


def legacy_output() -> None:
    """Tune's table-only output. Tune's current output (the default since Ray 2.7) has no
    concise mode: at the verbosity that prints its trial table it also prints a box per
    trial start (its whole config) and per trial end, 20,000 boxes for a 10,000-trial
    study, each printed inside Tune's event loop, and it ignores `RunConfig(
    progress_reporter=...)`, the public way to choose columns. RAY_AIR_NEW_OUTPUT=0 (read
    by `ray.tune.experimental.output.get_air_verbosity`) keeps the CLIReporter table, whose
    columns are the grid values in the trial name, a search's drawn values and the latest
    metrics (tuner.reporter). A user's own setting wins."""
    os.environ.setdefault(NEW_OUTPUT, "0")


NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"
