"""Machines for `ray up` on this one machine: hosts in namespaces, a LAN, an S3 server.

    LAN   a Linux bridge `vs15br` with 10.15.15.1/24, in this (the "laptop's")
          network namespace, forwarding off: it has no port to the outside.
    host  a named network namespace `vs15-NAME` joined to the bridge by a veth
          pair (10.15.15.N/24; its default route points at the bridge, where
          nothing answers, so Ray finds the host's address as on a real
          machine and no packet can leave), plus its own mount, PID and UTS
          namespaces: a private home and /tmp, hostname NAME, sshd as its
          only service (tests/support/hostinit.py is PID 1). Killing PID 1
          kills every process on the host at once.
    S3    moto's server on 10.15.15.1: storage that every host and the laptop share.

All traffic stays on this machine: the hosts reach only the bridge. Every
process started here dies with the test process (PR_SET_PDEATHSIG), and
`cleanup_stale` removes what an earlier, killed run left behind. Needs root,
iproute2, util-linux (`unshare`, `mount`), openssh-server and rsync.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PREFIX = "vs15"
BRIDGE = f"{PREFIX}br"
NET = "10.15.15"
LAPTOP_IP = f"{NET}.1"
HOSTINIT = Path(__file__).with_name("hostinit.py")


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the test process dies (even by SIGKILL)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def missing_tools() -> list[str]:
    need = ["ip", "unshare", "mount", "/usr/sbin/sshd", "ssh", "ssh-keygen", "rsync"]
    return [t for t in need if not shutil.which(t)]


def cleanup_stale() -> None:
    """Remove the namespaces and links of an earlier run that was killed."""
    for ns in sh("ip", "netns", "list", check=False).stdout.split():
        if ns.startswith(PREFIX + "-"):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
    sh("ip", "link", "del", BRIDGE, check=False)


class Lan:
    def __init__(self):
        cleanup_stale()
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("sysctl", "-qw", f"net.ipv4.conf.{BRIDGE}.forwarding=0")
        sh("ip", "addr", "add", f"{LAPTOP_IP}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")

    def close(self) -> None:
        sh("ip", "link", "del", BRIDGE, check=False)


def wait_port(ip: str, port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {ip}:{port} after {timeout} s")


class Host:
    """One machine: `ip netns` + `unshare`, sshd on NET.N:22, root's home private."""

    def __init__(self, name: str, n: int, base: Path, authorized_key: str, bashrc: str,
                 keep: list[str]):
        self.name, self.ip = name, f"{NET}.{n}"
        self.ns, self.veth = f"{PREFIX}-{name}", f"{PREFIX}v{n}"
        self.dir = base / name
        self.home, self.tmp = self.dir / "home", self.dir / "tmp"
        for d in (self.home / ".ssh", self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        (self.home / ".ssh" / "authorized_keys").write_text(authorized_key)
        (self.home / ".bashrc").write_text(bashrc)
        self.tmp.chmod(0o1777)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_key"))
        (self.dir / "sshd_config").write_text(f"""\
ListenAddress {self.ip}
HostKey {self.dir}/host_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
""")
        self.keep = keep
        self.proc: subprocess.Popen | None = None
        self._network()

    def _network(self) -> None:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.veth + "b")
        sh("ip", "link", "set", self.veth + "b", "master", BRIDGE, "up")
        sh("ip", "link", "set", self.veth, "netns", self.ns)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", f"{self.ip}/24", "dev", self.veth],
                    ["ip", "link", "set", self.veth, "up"],
                    ["ip", "route", "add", "default", "dev", self.veth]):
            sh("ip", "netns", "exec", self.ns, *cmd)

    def boot(self) -> None:
        """Start the host's init and sshd (again, after `power_off`: a reboot with a fresh /tmp)."""
        for p in self.tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        cmd = ["ip", "netns", "exec", self.ns, "unshare", "--mount", "--pid", "--uts", "--fork",
               "--kill-child", "--mount-proc", "--propagation", "private",
               sys.executable, str(HOSTINIT), "--hostname", self.name,
               "--home", str(self.home), "--user-home", os.path.expanduser("~root"),
               "--tmp", str(self.tmp), "--sshd-config", str(self.dir / "sshd_config"),
               "--log", str(self.dir / "sshd.log")]
        for k in self.keep:
            cmd += ["--keep", k]
        self.proc = subprocess.Popen(cmd, preexec_fn=die_with_parent, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "init.log", "ab"))
        wait_port(self.ip, 22)

    def power_off(self) -> None:
        """SIGKILL to `unshare`, whose --kill-child kills PID 1, which takes the namespace."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        deadline = time.time() + 30
        while time.time() < deadline and self.pids():
            time.sleep(0.2)

    def pids(self) -> list[int]:
        """Processes in the host's network namespace: none once it is off."""
        return [int(p) for p in sh("ip", "netns", "pids", self.ns, check=False).stdout.split()]

    def close(self) -> None:
        self.power_off()
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sh("ip", "netns", "del", self.ns, check=False)
        sh("ip", "link", "del", self.veth + "b", check=False)


class S3Server:
    """moto's S3 server on the LAN; `env` gives a process access to it."""

    def __init__(self, ip: str, log: Path, bucket: str = "vaestudy"):
        with socket.socket() as s:
            s.bind((ip, 0))
            self.port = s.getsockname()[1]
        self.url, self.bucket = f"http://{ip}:{self.port}", bucket
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_EC2_METADATA_DISABLED": "true"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", ip, "-p", str(self.port)],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        wait_port(ip, self.port)
        import boto3
        boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=bucket)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
