"""Every driver and server a test starts goes through here.

`Procs.start` runs a command in its own process group with its output in a log
file under the test's tmp path; `Procs.stop` (always run by the `procs` fixture,
also when the test fails) kills each group, so nothing a driver started (Ray's
raylet, GCS, workers) outlives the test, and closes the logs. Drivers get Ray's
temp folder and Tune's folder under the test's tmp path.

Servers on 127.0.0.1: `moto_server` (S3, one per module, a fresh bucket per test,
its request log countable) and a throwaway PostgreSQL (initdb/pg_ctl as the
`postgres` user; skipped with one line only where the binaries are missing).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PG_BIN = Path(os.environ.get("VAESTUDY_PG_BIN") or next(
    iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)),
    Path("/usr/lib/postgresql/15/bin/initdb")).parent)
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "vaestudy-test-secret-7f3a",
          "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    """`vaestudy ARGS` from this checkout (not an installed copy)."""
    return [sys.executable, "-m", "study.cli", *args]


class Procs:
    def __init__(self, tmp: Path, ray_tmp: Path):
        self.tmp, self.ray_tmp = tmp, ray_tmp
        self.running: list[tuple[subprocess.Popen, object]] = []
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}"
                    f"{os.environ.get('PYTHONPATH', '')}", "RAY_TMPDIR": str(ray_tmp),
                    "VAESTUDY_TUNE_DIR": str(tmp / "tune"), "RAY_AIR_NEW_OUTPUT": "0"}

    def start(self, cmd: list[str], name: str, env: dict | None = None,
              user: str | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd or self.tmp,
                             env={**self.env, **(env or {})}, start_new_session=True)
        self.running.append((p, log))
        return p

    def run(self, cmd: list[str], name: str, timeout: float = 600, **kw) -> tuple[int, str]:
        """Start, wait, and return (exit code, its output); killed at the timeout."""
        p = self.start(cmd, name, **kw)
        try:
            p.wait(timeout=timeout)
        finally:
            self.kill(p)
        return p.returncode, self.log(name)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def kill(self, p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal p's whole group; with SIGKILL, also reap p and close its log."""
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        if sig != signal.SIGKILL:
            return
        p.wait()
        for q, log in list(self.running):
            if q is p:
                log.close()
                self.running.remove((q, log))

    def stop(self) -> None:
        for p, _ in list(self.running):
            self.kill(p)


@pytest.fixture
def procs(tmp_path, tmp_path_factory):
    # Ray's socket paths must stay under 107 bytes: a short folder in pytest's base temp
    p = Procs(tmp_path, tmp_path_factory.mktemp("ray"))
    try:
        yield p
    finally:
        p.stop()


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# ---- S3: moto's server --------------------------------------------------------------
class S3:
    """A moto S3 server on loopback; `bucket()` makes a fresh one, `requests()` counts."""

    def __init__(self, procs: Procs):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.procs = procs
        self.proc = procs.start([str(self.moto_server()), "-H", "127.0.0.1", "-p",
                                 str(self.port)], "moto", env=S3_ENV)
        wait_port(self.port)

    @staticmethod
    def moto_server() -> Path:
        return Path(sys.executable).parent / "moto_server"

    def client(self, **over):
        import boto3

        env = {**S3_ENV, **over}
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=env["AWS_REGION"],
                            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])

    def bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict:
        """What a user of this server exports: credentials and region (endpoint in the URI)."""
        return dict(S3_ENV)

    def uri(self, bucket: str, prefix: str = "res") -> str:
        return f"s3://{bucket}/{prefix}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def requests(self, bucket: str | None = None) -> dict[str, int]:
        """Requests by HTTP method from moto's request log (to one bucket when given)."""
        out: dict[str, int] = {}
        for line in self.procs.log("moto").splitlines():
            parts = re.sub(r"\x1b\[[0-9;]*m", "", line).split('"')
            if len(parts) < 2 or " HTTP/" not in parts[1]:
                continue
            method, path = parts[1].split()[:2]
            if bucket is None or path.lstrip("/").startswith(bucket):
                out[method] = out.get(method, 0) + 1
        return out

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3")
    procs = Procs(tmp, tmp)
    try:
        yield S3(procs)
    finally:
        procs.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The module's S3 server, with this process's AWS variables pointing at it."""
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    return s3_server


# ---- PostgreSQL: a throwaway server ---------------------------------------------------
class Postgres:
    USER, PASSWORD = "vae", "pw:with@odd/chars"    # a role only its password lets in

    def __init__(self, procs: Procs):
        if not (PG_BIN / "initdb").exists():
            pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (apt-get install postgresql)")
        # the postgres user must own its data folder; pytest's tmp is root-only
        self.dir = Path(tempfile.mkdtemp(prefix="vaestudy-pg-"))
        self.dir.chmod(0o755)
        shutil.chown(self.dir, "postgres")
        self.port = free_port()
        procs.run([str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                   "-U", "postgres"], "initdb", user="postgres", cwd=self.dir, timeout=120)
        hba = self.dir / "data" / "pg_hba.conf"          # first match wins: USER needs its password
        hba.write_text(f"host all {self.USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        self.proc = procs.start([str(PG_BIN / "postgres"), "-D", str(self.dir / "data"),
                                 "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
                                 "-k", str(self.dir), "-c", "fsync=off"], "postgres",
                                user="postgres", cwd=self.dir)
        wait_port(self.port)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        # a role that must give its password (scram-sha-256 over TCP), with its own database
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres",
                             autocommit=True) as c:
            c.execute(f"CREATE ROLE {self.USER} LOGIN PASSWORD '{self.PASSWORD}'")
            c.execute(f"CREATE DATABASE {self.USER} OWNER {self.USER}")

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pg")
    tmp.chmod(0o777)
    procs = Procs(tmp, tmp)
    pg = None
    try:
        pg = Postgres(procs)
        yield pg
    finally:
        procs.stop()
        if pg is not None:
            pg.cleanup()
