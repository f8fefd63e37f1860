"""PID 1 of a test host (tests/support/onprem.py): private home and /tmp, a hostname, sshd.

Started by `ip netns exec NS unshare --mount --pid --uts --fork --kill-child
--mount-proc --propagation private`, so it is already in the host's network,
mount, PID and UTS namespaces. It bind-mounts the host's own home over the SSH
user's home (keeping the paths listed with --keep, such as the Python that the
shared venv is built on) and its own folder over /tmp, sets the hostname, runs
sshd in the foreground and reaps every orphan (Ray daemonizes its processes).
When it ends, the kernel kills every process in the PID namespace: killing it
is pulling the host's power cord.
"""
import argparse
import os
import signal
import socket
import subprocess
import sys


def bind(src: str, dst: str) -> None:
    subprocess.run(["mount", "--rbind", src, dst], check=True)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hostname", required=True)
    p.add_argument("--home", required=True, help="this host's home folder")
    p.add_argument("--user-home", required=True, help="the SSH user's home, e.g. /root")
    p.add_argument("--tmp", required=True, help="this host's /tmp")
    p.add_argument("--keep", action="append", default=[], help="a path under --user-home to keep")
    p.add_argument("--sshd-config", required=True)
    p.add_argument("--log", required=True)
    a = p.parse_args()

    socket.sethostname(a.hostname)
    for keep in a.keep:                          # visible again inside the private home
        inside = os.path.join(a.home, os.path.relpath(keep, a.user_home))
        os.makedirs(inside, exist_ok=True)
        bind(keep, inside)
    bind(a.home, a.user_home)
    bind(a.tmp, "/tmp")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege-separation folder

    log = open(a.log, "ab", buffering=0)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", a.sshd_config],
                            stdout=log, stderr=log, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:                                  # reap everything; end with sshd
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return 0
        if pid == sshd.pid:
            return 1


if __name__ == "__main__":
    sys.exit(main())
