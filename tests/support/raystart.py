"""`ray` CLI that keeps 127.0.0.1 as the node address (tests only).

Ray 2.60 replaces a loopback --node-ip-address with the machine's outward
address; on a test machine every node must stay on loopback, so this runs
Ray's own CLI with that replacement turned off.
"""
import sys

from ray.scripts.scripts import main

from study import raypatch

raypatch.keep_loopback_address()

if __name__ == "__main__":
    sys.exit(main())
