"""Every patch of Ray's private internals, in one place, each with its reason.

Checked against the Ray versions they were written for: on another version a
patch still applies when the attribute it replaces exists, and says so once on
stderr, so an upgrade that moves it fails loudly here instead of silently
leaving a node on the wrong address.
"""
from __future__ import annotations

import os
import sys

TESTED = ("2.4", "2.5", "2.6")          # Ray 2.40 .. 2.69 (prefix of ray.__version__)
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": a node's address stays 127.0.0.1


def _check(module, attr: str) -> None:
    import ray

    if not hasattr(module, attr):
        raise RuntimeError(f"Ray {ray.__version__}: {module.__name__}.{attr} is gone; "
                           "study/raypatch.py needs updating for this Ray")
    if not ray.__version__.startswith(TESTED):
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
