"""The user's first commands, for real: `ray up`, `ray job submit`, `ray down` of
cluster-onprem.yaml, on two hosts made on this machine (tests/support/onprem.py).

    ./dev test -m cluster tests/test_cluster_up.py      # root; 4-10 minutes on 2 cores

The hosts are network + mount + PID + UTS namespaces on a bridge with no port
to the outside (10.15.15.0/24), each with its own home and /tmp and sshd; the
test process is the user's laptop (10.15.15.1). The cluster config is the
shipped cluster-onprem.yaml with only these differences (`DIFFERENCES`, checked
by `test_generated_config_differs_only_where_stated`):

  - addresses: head_ip/worker_ips are the two hosts; one worker (min_workers = max_workers = 1);
  - user and key: root (namespaces need root) with a throwaway key made per run;
    /home/ubuntu becomes /root wherever the file names the home;
  - install source: no git URL and no download. The per-host venv is made
    `--without-pip` with a .pth line that puts the test's own venv (torch,
    several GB with CUDA) on its path, so torch is never installed per host.
    `ray[default]==2.60.0` and `vaestudy` install with pip `--no-index` from
    a wheel folder copied to each host by file_mounts: a vaestudy wheel built
    from this checkout, Ray's wheel (force-reinstalled into the host venv, so
    `ray` and `vaestudy` run the host venv's Python, whose workers import the
    checkout's code) and the `[default]` extras (aiohttp etc., 110 MB in all,
    downloaded once into VAESTUDY_WHEELHOUSE, default ~/.cache/vaestudy/cluster-wheels);
  - data: the MNIST files on disk (VAESTUDY_MNIST, else ../shared/data/mnist, else the
    1,000-image slice in tests/data/mnist) are a file_mount at
    ~/data/mnist, so the shipped setup command's load_mnist(download=True)
    finds them and downloads nothing.

What is not in the config but on the "machines": each host's ~/.bashrc starts
with the Python the test venv is built on first on PATH (the machine's
`python3`) and RAY_USAGE_STATS_ENABLED=0; the study's storage is a moto S3
server on 10.15.15.1, reached through AWS_* variables in each host's ~/.bashrc
(the per-node environment docs/cluster.md describes; never the job's runtime
environment, which Ray keeps in the job's record). Timings go to stdout (`-s`) as `TIMING name seconds`.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE / "support"))
import onprem  # noqa: E402



def cluster_test(f):
    """Slow, and outside the default suite: `-m cluster` runs it (.ci/run does)."""
    return pytest.mark.slow(pytest.mark.cluster(f))


SHIPPED = ROOT / "cluster-onprem.yaml"
USER, USER_HOME = "root", "/root"
HEAD_IP, WORKER_IP = f"{onprem.NET}.2", f"{onprem.NET}.3"
WHEELHOUSE = Path(os.environ.get("VAESTUDY_WHEELHOUSE", "~/.cache/vaestudy/cluster-wheels")
                  ).expanduser()
MNIST = Path(os.environ.get("VAESTUDY_MNIST", ROOT.parent / "shared" / "data" / "mnist"))
if not (MNIST / "t10k-images-idx3-ubyte.gz").exists():
    MNIST = ROOT / "tests" / "data" / "mnist"   # the shipped slice: a clone alone runs this test
BUCKET = "vaestudy"
STORAGE = f"s3://{BUCKET}/studies"
DIFFERENCES = {
    "provider": "the addresses of the two hosts",
    "min_workers": "one worker host", "max_workers": "one worker host",
    "auth": "user root and a throwaway key",
    "file_mounts": "/root for /home/ubuntu; the wheel folder; the MNIST files on disk",
    "setup_commands": "venv on the shared venv; install from the wheel folder; /root",
}
TINY = ["--preset", "quickstart", "--set", "seeds=[0, 1, 2, 3]", "--set", "noise.sigma2=0.1",
        "--set", "dataset.n=600", "--set", "model.latent_dim=3", "--set", "train.epochs=1",
        "--set", "eval.every=1", "--set", "eval.traversals=false", "--set", "max_concurrent=4",
        "--set", "resources.gpu=0",     # the local provider cannot tell; no GPU here
        # resources.cpu 1 (the preset's): 4 trials at once fill both hosts' 2 CPUs
        "--set", f"storage={STORAGE}", "--no-report"]


# ---- the generated config ---------------------------------------------------------------

def _rehome(x):
    if isinstance(x, str):
        return x.replace("/home/ubuntu", USER_HOME)
    if isinstance(x, list):
        return [_rehome(v) for v in x]
    if isinstance(x, dict):
        return {_rehome(k): _rehome(v) for k, v in x.items()}
    return x


def _sub(pattern: str, new: str, text: str) -> str:
    out, n = re.subn(pattern, new, text)
    assert n, f"cluster-onprem.yaml changed: {pattern!r} not found in {text!r}"
    return out


def cluster_config(key: Path, wheels: Path, mnist: Path, shared_site: str,
                   head_ip: str = HEAD_IP, worker_ip: str = WORKER_IP) -> dict:
    """cluster-onprem.yaml with only DIFFERENCES changed (see the module docstring)."""
    c = _rehome(copy.deepcopy(yaml.safe_load(SHIPPED.read_text())))
    c["provider"].update(head_ip=head_ip, worker_ips=[worker_ip])
    c["min_workers"] = c["max_workers"] = 1
    c["auth"] = {"ssh_user": USER, "ssh_private_key": str(key)}
    c["file_mounts"].update({f"{USER_HOME}/vaestudy-wheels": str(wheels),
                             f"{USER_HOME}/data/mnist": str(mnist)})
    setup = []
    for cmd in c["setup_commands"]:
        if " -m venv " in cmd:
            site = f"~/vaestudy-env/lib/python{sys.version_info[0]}.{sys.version_info[1]}" \
                   "/site-packages"
            cmd = _sub(r" -m venv ", " -m venv --without-pip ", cmd) + \
                f" && echo {shared_site} > {site}/shared-venv.pth"
        elif " -m pip install " in cmd:
            cmd = _sub(r'"vaestudy @ git\+\S+"', "vaestudy", cmd)
            cmd = _sub(r" -m pip install ", " -m pip install --no-index --find-links "
                       "~/vaestudy-wheels ", cmd)
            own = _sub(r"\[default\]", "", cmd.replace(" install ", " install --no-deps "
                                                        "--force-reinstall "))
            setup.append(own)
        setup.append(cmd)
    c["setup_commands"] = setup
    return c


def test_generated_config_differs_only_where_stated(tmp_path):
    shipped = yaml.safe_load(SHIPPED.read_text())
    c = cluster_config(tmp_path / "key", tmp_path / "wheels", tmp_path / "mnist", "/venv/site")
    changed = {k for k in set(c) | set(shipped) if c.get(k) != shipped.get(k)}
    assert changed == set(DIFFERENCES), changed
    assert any("load_mnist" in cmd and f"{USER_HOME}/data/mnist" in cmd
               for cmd in c["setup_commands"])
    assert not any("git+" in cmd for cmd in c["setup_commands"])
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(copy.deepcopy(c)))


# ---- the machine: hosts, storage, the laptop's environment -------------------------------

def _fill_wheelhouse(dest: Path) -> None:
    """Ray's wheel and its [default] extras, downloaded once; a vaestudy wheel per run."""
    import ray
    from importlib.metadata import requires
    from packaging.requirements import Requirement

    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
           "--dest", str(WHEELHOUSE)]
    if not list(WHEELHOUSE.glob(f"ray-{ray.__version__}-*.whl")):
        subprocess.run([*pip, "--no-deps", f"ray=={ray.__version__}"], check=True, timeout=900)
    if not (WHEELHOUSE / ".extras-done").exists():
        extras = []
        for r in map(Requirement, requires("ray")):
            if r.marker and r.marker.evaluate({"extra": "default"}) \
                    and not r.marker.evaluate({"extra": ""}):
                r.marker = None
                extras.append(str(r))
        subprocess.run([*pip, *extras], check=True, timeout=900)
        (WHEELHOUSE / ".extras-done").write_text("\n".join(extras))
    dest.mkdir()
    for w in WHEELHOUSE.glob("*.whl"):
        if not w.name.startswith("vaestudy-"):
            os.link(w, dest / w.name) if w.stat().st_dev == dest.stat().st_dev \
                else shutil.copy(w, dest)
    src = dest.parent / "src"                  # build from a copy: the checkout stays clean
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "results", "__pycache__", "build", "*.egg-info", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(dest), str(src)],
                   check=True, timeout=600, capture_output=True)


def _laptop_venv(path: Path, wheels: Path, shared_site: str) -> Path:
    """The laptop's `ray[default]` and vaestudy: the hosts' recipe, in a folder of the test."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = path / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "shared-venv.pth").write_text(shared_site + "\n")
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
           "--find-links", str(wheels)]
    ray = f"ray=={__import__('ray').__version__}"
    subprocess.run([*pip, "--no-deps", "--force-reinstall", ray, "vaestudy"], check=True,
                   timeout=600)
    subprocess.run([*pip, ray.replace("ray", "ray[default]"), "vaestudy"], check=True,
                   timeout=600)
    return path


def _keep_under_home() -> list[str]:
    """What the hosts need from the real home (e.g. a pyenv Python), if it lives there."""
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(ROOT)}
    out = []
    for p in paths:
        if p.startswith(USER_HOME + "/"):
            out.append(os.path.join(USER_HOME, p[len(USER_HOME) + 1:].split("/")[0]))
    return sorted(set(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machine:
    """The laptop (this process, 10.15.15.1), two hosts, S3; `ray` commands from the laptop."""

    def __init__(self, base: Path):
        self.base, self.log = base, base / "commands.log"
        self.timings: dict[str, float] = {}
        self.hosts: dict[str, onprem.Host] = {}
        self.lan = self.s3 = self.tunnel = None
        self.up = False

    def start(self) -> None:
        b = self.base
        self.key = b / "id_ed25519"
        onprem.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        _fill_wheelhouse(b / "wheels")
        self.lan = onprem.Lan()
        pybin = os.path.dirname(os.path.realpath(sys.executable if sys.prefix == sys.base_prefix
                                                 else sys._base_executable))
        self.s3 = onprem.S3Server(onprem.LAPTOP_IP, b / "s3.log", BUCKET)
        # each machine's own credentials, in its environment (as docs/cluster.md says),
        # never in the job's runtime env, which Ray shows in `ray job list` and the dashboard
        creds = " ".join(f"{k}={v}" for k, v in self.s3.env.items())
        bashrc = f"export PATH={pybin}:$PATH RAY_USAGE_STATS_ENABLED=0 {creds}\n"
        for n, (name, ip) in enumerate([("head", HEAD_IP), ("worker", WORKER_IP)]):
            h = onprem.Host(name, n + 2, b, self.key.with_suffix(".pub").read_text(), bashrc,
                            _keep_under_home())
            assert h.ip == ip
            self.hosts[name] = h
            h.boot()
        home = b / "laptop"
        (home / "tmp").mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "AWS_"))}
        site = next(p for p in sys.path if p.startswith(sys.prefix) and
                    p.endswith("site-packages"))
        venv = _laptop_venv(home / "env", b / "wheels", site)
        self.env.update(HOME=str(home), TMPDIR=str(home / "tmp"), RAY_AUTH_MODE="token",
                        RAY_USAGE_STATS_ENABLED="0", PATH=f"{venv}/bin:{os.environ['PATH']}",
                        **self.s3.env)
        self.env.pop("PYTHONPATH", None)           # the laptop runs the installed wheel
        self.ray("get-auth-token", "--generate")
        self.config = b / "cluster.yaml"
        self.config.write_text(yaml.safe_dump(cluster_config(
            self.key, b / "wheels", MNIST, site), sort_keys=False))

    def ray(self, *args: str, env: dict | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(["ray", *args], env=env or self.env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.base)
        with open(self.log, "a") as f:
            f.write(f"$ ray {' '.join(args)}\n{r.stdout}{r.stderr}[rc={r.returncode}]\n")
        if check:
            assert r.returncode == 0, f"ray {args[0]}: rc={r.returncode}\n{r.stdout[-3000:]}" \
                                      f"\n{r.stderr[-3000:]}"
        return r

    def vaestudy(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["vaestudy", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, cwd=self.base)

    def open_tunnel(self) -> str:
        """`ray dashboard CONFIG`: the head's job API on the laptop's loopback."""
        port = _free_port()
        self.tunnel = subprocess.Popen(
            ["ray", "dashboard", "--port", str(port), str(self.config)], env=self.env,
            stdout=open(self.base / "tunnel.log", "ab"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=onprem.die_with_parent)
        self.address = f"http://127.0.0.1:{port}"
        onprem.wait_port("127.0.0.1", port, timeout=120)
        return self.address

    def close_tunnel(self) -> None:
        if self.tunnel is not None and self.tunnel.poll() is None:
            os.killpg(self.tunnel.pid, 9)
            self.tunnel.wait()
        self.tunnel = None

    def alive_nodes(self) -> list[dict]:
        r = self.ray("list", "nodes", "--address", self.address, "--format", "json",
                     "--filter", "state=ALIVE", check=False, timeout=120)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else []
        except json.JSONDecodeError:
            return []

    def stop(self) -> None:
        self.close_tunnel()
        if self.up:
            self.ray("down", "-y", str(self.config), check=False, timeout=300)
        for h in self.hosts.values():
            h.close()
        if self.s3 is not None:
            self.s3.close()
        if self.lan is not None:
            self.lan.close()


@pytest.fixture(scope="module")
def machine(request):
    if "cluster" not in (request.config.getoption("-m") or ""):
        pytest.skip("the cluster test runs only when asked for: -m cluster")
    if os.geteuid() != 0:
        pytest.skip("needs root: it makes network namespaces and a bridge")
    if onprem.missing_tools():
        pytest.skip(f"missing {onprem.missing_tools()}: apt-get install openssh-server rsync "
                    "iproute2 (.ci/run does)")
    if not MNIST.is_dir():
        pytest.skip(f"no MNIST files at {MNIST} (set VAESTUDY_MNIST)")
    shown = [p for p in (sys.prefix, ROOT, MNIST) if Path(p).resolve().is_relative_to("/tmp")]
    if shown:
        pytest.fail(f"{shown[0]} is under /tmp, which every host of the cluster has its own of: "
                    "run the test from a checkout and venv outside /tmp")
    base = Path(tempfile.mkdtemp(prefix="vaestudy-onprem-", dir="/var/tmp"))
    m = Machine(base)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    try:
        m.start()
        os.environ.update(m.s3.env)            # this process reads the results too
        yield m
    finally:
        try:
            m.stop()
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            for k, v in m.timings.items():
                print(f"TIMING {k} {v:.1f}")
            for junk in ("wheels", "src", "head/home", "worker/home", "laptop/env"):
                shutil.rmtree(base / junk, ignore_errors=True)   # logs stay in `base`
            print(f"logs: {base}")


# ---- the path ----------------------------------------------------------------------------

def _store(name: str):
    from resultstore.store import ResultStore
    return ResultStore(STORAGE, name)


def _rows(name: str):
    from analysis.load import scan
    return scan(STORAGE, name, "trials").collect()     # every stored row, duplicates included


def _exactly_once(name: str, n_trials: int, epochs: int, out: str = ""):
    rows = _rows(name)
    assert rows.height == n_trials * epochs, _why(name, out)
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height, _why(name, out)
    states = [s["state"] for s in _store(name).all_status()]
    assert states == ["completed"] * n_trials, _why(name, out)
    return rows


def _why(name: str, out: str = "") -> str:
    """What a failed check needs: each trial's status (attempts, node, error), the stored
    rows' hosts, and the job's last Tune table (`loc`: the node and PID that ran a trial)."""
    lines = [f"trial statuses of {name}:"]
    for st in sorted(_store(name).all_status(), key=lambda s: s["trial_id"]):
        lines.append(f"  {st['trial_id']} {st['state']} attempts={st.get('attempts')} "
                     f"node={st.get('node')} error={str(st.get('error'))[:300]}")
    try:
        lines.append(str(_rows(name).select("trial_id", "epoch", "host", "node")))
    except Exception as e:                               # noqa: BLE001 (a diagnosis only)
        lines.append(f"no rows: {e}")
    table = [ln for ln in out.splitlines() if ln.startswith(("| t", "| Trial name"))]
    return "\n".join(lines + table[-12:])


def _submit(m: Machine, job_id: str, args: list[str]) -> None:
    m.ray("job", "submit", "--address", m.address, "--submission-id", job_id,
          "--no-wait", "--", "vaestudy", "run", *args)


def _follow(m: Machine, job_id: str) -> subprocess.Popen:
    return subprocess.Popen(["ray", "job", "logs", "--address", m.address, "--follow", job_id],
                            env=m.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=onprem.die_with_parent)


def _finish(m: Machine, job_id: str, logs: subprocess.Popen, timeout: float = 900) -> str:
    try:
        out, _ = logs.communicate(timeout=timeout)
    finally:
        if logs.poll() is None:
            os.killpg(logs.pid, 9)
    status = m.ray("job", "status", "--address", m.address, job_id).stdout
    assert f"Job {job_id!r} succeeded" in status, f"{status}\n{out[-4000:]}"
    return out


def _first_running(name: str, since: float, logs: subprocess.Popen, timeout: float = 600):
    """Seconds from `since` until a trial's status says running (or the job ended)."""
    store, deadline = _store(name), time.time() + timeout
    while time.time() < deadline and logs.poll() is None:
        if store.exists(store.path("status")) and store.all_status():
            return time.time() - since
        time.sleep(0.5)
    return None


@cluster_test
def test_up_submit_follow_read_back(machine):
    m = machine
    t0 = time.time()
    m.up = True                                   # from here on, `ray down` in the teardown
    up = m.ray("up", "-y", "--no-config-cache", str(m.config), timeout=1200)
    m.timings["ray_up_head_s"] = time.time() - t0
    assert "Ray runtime started" in up.stdout + up.stderr or "ray start" in up.stdout
    m.open_tunnel()
    deadline = time.time() + 900
    while len(nodes := m.alive_nodes()) < 2 and time.time() < deadline:
        time.sleep(3)
    assert len(nodes) == 2, f"the worker did not join: {nodes}"
    assert {n["node_ip"] for n in nodes} == {HEAD_IP, WORKER_IP}
    m.timings["ray_up_to_worker_joined_s"] = time.time() - t0

    # token authentication is on: a client without the token is refused
    no_token = {**m.env, "HOME": str(m.base / "nobody")}
    r = m.ray("job", "list", "--address", m.address, env=no_token, check=False, timeout=120)
    assert r.returncode != 0 and "couldn't find an authentication token" in r.stdout + r.stderr, \
        r.stdout + r.stderr

    t_submit = time.time()
    _submit(m, "onprem-1", [*TINY, "--set", "name=onprem"])
    logs = _follow(m, "onprem-1")
    first = _first_running("onprem", t0, logs)
    out = _finish(m, "onprem-1", logs)
    m.timings["job_total_s"] = time.time() - t_submit
    if first is not None:
        m.timings["ray_up_to_first_trial_running_s"] = first
    assert "study onprem: 4 completed, 0 diverged, 0 failed" in out, out[-3000:]

    rows = _exactly_once("onprem", 4, 1, out)
    hosts = {n.split("/")[0] for n in rows["node"]}
    # Trials on both hosts: on a cluster Tune does not reuse actors (study/tuner.py), else
    # the head's first idle actor takes the trials whose actors still start on the worker.
    assert hosts == {"head", "worker"}, _why("onprem", out)
    assert set(rows["host"]) == hosts, _why("onprem", out)      # the trial's host, not the driver's

    st = m.vaestudy("status", f"{STORAGE}/onprem")       # from the laptop: outside the cluster
    assert st.returncode == 0 and "completed" in st.stdout, st.stdout + st.stderr
    rp = m.vaestudy("report", f"{STORAGE}/onprem", "--no-higgins")
    assert rp.returncode == 0, rp.stdout[-2000:] + rp.stderr[-2000:]
    assert _store("onprem").exists(_store("onprem").path("report.html"))


@cluster_test
def test_a_host_that_dies_mid_study_costs_nothing(machine):
    m = machine
    if getattr(m, "address", None) is None:
        pytest.skip("the cluster did not come up")
    name, epochs = "onprem-dies", 6
    _submit(m, "onprem-2", [*TINY, "--set", f"name={name}", "--set", f"train.epochs={epochs}",
                            "--set", "dataset.n=2500", "--set", "checkpoint.every=1",
                            "--set", "failure.max_retries=3"])
    logs = _follow(m, "onprem-2")
    store, victim, deadline = _store(name), None, time.time() + 600
    while victim is None and time.time() < deadline and logs.poll() is None:
        for st in store.all_status() if store.exists(store.path("status")) else []:
            if st["state"] == "running" and st.get("node", "").startswith("worker/") and \
                    store.trial(st["trial_id"]).checkpoints():
                victim = st["trial_id"]
        time.sleep(0.5)
    assert victim, "no trial ran on the worker host\n" + _why(name)
    worker = m.hosts["worker"]
    worker.power_off()                                   # every process on the host dies at once
    assert not worker.pids()
    assert store.status(victim)["state"] == "running"
    worker.boot()                                        # back with a fresh /tmp; the autoscaler
    out = _finish(m, "onprem-2", logs)                   # may start Ray there again, or not
    assert f"study {name}: 4 completed, 0 diverged, 0 failed" in out, out[-3000:]
    rows = _exactly_once(name, 4, epochs, out)
    assert store.status(victim)["attempts"] >= 2, _why(name, out)
    assert rows.filter(rows["trial_id"] == victim)["node"].n_unique() >= 2, _why(name, out)


@cluster_test
def test_ray_down_leaves_no_process(machine):
    """`ray down` stops Ray on the head only: the local provider merely marks workers
    terminated. Their raylets exit once the head is gone, but not every Ray process
    does (a log monitor stays), so docs/cluster.md adds `ray stop` on each worker."""
    m = machine
    if not m.up:
        pytest.skip("the cluster did not come up")
    m.close_tunnel()
    m.ray("down", "-y", str(m.config), timeout=600)
    m.up = False
    assert _settled(m.hosts["head"], 60) == []
    m.after_down = _settled(m.hosts["worker"], 60)        # what `ray down` alone leaves
    print(f"NOTE left on the worker by `ray down` alone: {m.after_down}")
    r = subprocess.run(["ssh", "-i", str(m.key), "-o", "StrictHostKeyChecking=no",
                        "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                        f"{USER}@{WORKER_IP}", "~/vaestudy-env/bin/ray stop"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _settled(m.hosts["worker"], 60) == []


def _settled(host: onprem.Host, timeout: float) -> list[str]:
    deadline = time.time() + timeout
    while (left := _leftovers(host)) and time.time() < deadline:
        time.sleep(1)
    return left


def _leftovers(host: onprem.Host) -> list[str]:
    """Processes on the host besides its init and sshd's listener."""
    out = []
    for pid in host.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "hostinit.py" in cmd or cmd.startswith("sshd: /usr/sbin/sshd"):
            continue
        out.append(f"{pid} {cmd[:200]}")
    return out


BAD_INPUT = {        # what `ray up` prints; docs/cluster.md's troubleshooting table quotes it
    "wrong key": ["Permission denied (publickey)", "Failed to setup head node."],
    "unreachable host": ["No route to host", "Failed to setup head node."],
    "no token on the laptop": ["auth_token"],
}


@cluster_test
def test_bad_input_at_ray_up(machine):
    """A wrong key, an unreachable head, no token on the laptop: `ray up` fails, saying why.

    Each try has its own laptop /tmp (so its own cluster state file) and waits
    20 s for SSH instead of Ray's 900 (AUTOSCALER_NODE_START_WAIT_S)."""
    m = machine
    other = m.base / "not_authorized"
    onprem.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    site, wheels = "/nonexistent", m.base / "wheels"
    configs = {
        "wrong key": (cluster_config(other, wheels, MNIST, site), {}),
        "unreachable host": (cluster_config(m.key, wheels, MNIST, site,
                                            head_ip=f"{onprem.NET}.9"), {}),
        "no token on the laptop": (cluster_config(m.key, wheels, MNIST, site),
                                   {"HOME": str(m.base / "tokenless")}),
    }
    for i, (case, (config, env)) in enumerate(configs.items()):
        path, tmp = m.base / f"bad-{i}.yaml", m.base / f"bad-{i}-tmp"
        tmp.mkdir()
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = {**m.env, "TMPDIR": str(tmp), "AUTOSCALER_NODE_START_WAIT_S": "20", **env}
        r = m.ray("up", "-y", "--no-config-cache", str(path), env=env, check=False, timeout=600)
        out = r.stdout + r.stderr
        assert r.returncode != 0, (case, out[-3000:])
        for phrase in BAD_INPUT[case]:
            assert phrase in out, (case, phrase, out[-3000:])
