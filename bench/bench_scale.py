"""Scale: status, resume planning, compaction and the report's tables on big synthetic
studies; the driver's overhead per trial on a real Ray Tune study; a trial's memory vs
its uint8 data. Today's code (the branch point BASE) runs in the same run where it can.

    python bench/bench_scale.py [--trials 10000] [--base-trials 1000] [--s3-trials 1000]
        [--tune-trials 200] [--images 30000] [--completions 1000]
        [--resume-trials 60] [--skip s3,tune,data,callbacks,resume] [--smoke-test]

Synthetic studies are written through the real result store by bench/synthetic.py
(no training): N trials x E evaluated epochs x H factors, codes of C points at the
last epoch, as a finished driver leaves them (status files, status table, per-trial
files). Each figure is the median of --reps runs; the CLI figures include Python's
start-up, as a user sees them. S3 is a moto server on loopback; its request log gives
the request counts. Today's code is main before this issue (BASE), extracted with
`git archive`, reading the same studies before they are compacted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASE = "eca0ea7"                      # main before this work was merged ("today's code")
BASE_DRIVER = "c534564"               # main before the background status writer (issue 23)
sys.path[:0] = [str(ROOT), str(HERE)]

TABLES_SNIPPET = """
import resource, sys, time
t = time.perf_counter()
from analysis.report import Options, compute_tables
compute_tables(sys.argv[1], sys.argv[2], Options(higgins=None, trial_pages=False))
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
DRIVER_SNIPPET = """
import resource, sys, time
from study.spec import parse, trial_configs
from study import runner
from study.status import status_text
from study.tracker import StatusTracker
try:                                     # BASE's code, where it runs from its tree
    from trainables.store import ResultStore
except ImportError:
    from resultstore.store import ResultStore
st = ResultStore(sys.argv[1], sys.argv[2])
meta = st.read_json(st.path("study.json"))
t = time.perf_counter()
rows, todo = runner.plan(st, runner.recorded(meta, trial_configs(parse(meta["spec"]))))
StatusTracker(st, rows, todo, {"started": time.time()}).write(final=False)
status_text(st)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
CALLBACK_SNIPPET = """
import sys, time
from concurrent.futures import ThreadPoolExecutor
from ray.tune.experiment import Trial
from study.tracker import StatusTracker, as_callback, config_row
try:                                     # BASE's code, where it runs from its tree
    from trainables.store import ResultStore
except ImportError:
    from resultstore.store import ResultStore
st = ResultStore(sys.argv[1], sys.argv[2])
n, k = int(sys.argv[3]), int(sys.argv[4])
ids = [f"t{i:05d}" for i in range(n)]
with ThreadPoolExecutor(16) as ex:                 # how the first k ended: their status files
    list(ex.map(lambda t: st.set_status(t, "completed", epoch=1), ids[:k]))
sizes = []
write = st.write_status_table
def counted(rows, final, **meta):
    write(rows, final, **meta)
    sizes.append(len(st.read_bytes(st.path("status.parquet"))))
st.write_status_table = counted
rows = {t: config_row(t, {"train": {"epochs": 1}}) for t in ids}
tracker = StatusTracker(st, rows, {t: {} for t in ids}, {"started": time.time()})
tracker.write(final=False)
sizes.clear()
cb = as_callback(tracker)
trials = [Trial("fn", config={"trial": t}, stub=True) for t in ids[:k]]
spent, t0 = 0.0, time.perf_counter()
for i, tr in enumerate(trials):
    t = time.perf_counter()
    cb.on_trial_start(iteration=i, trials=trials, trial=tr)
    cb.on_trial_result(iteration=i, trials=trials, trial=tr, result={"epoch": 1, "evlb": -1.0})
    cb.on_trial_complete(iteration=i, trials=trials, trial=tr)
    cb.on_step_end(iteration=i, trials=trials)
    spent += time.perf_counter() - t
wall = time.perf_counter() - t0
tracker.write(final=True)
assert all(tracker.rows[t]["state"] == "completed" for t in ids[:k]), "a completion was lost"
print(spent * 1000 / k, sum(sizes) * 1000 / k, len(sizes), wall)
"""
TRIAL_SNIPPET = """
import resource, sys, time, json
import torch
from trainables.config import TrialConfig
try:                                     # BASE's code, where it runs from its tree
    from trainables.store import ResultStore
except ImportError:
    from resultstore.store import ResultStore
from trainables.train import run_trial
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss()
cfg = TrialConfig.from_dict(json.loads(sys.argv[3]))
t = time.perf_counter()
run_trial(cfg, ResultStore(sys.argv[1], sys.argv[2]), log=lambda s: None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(time.perf_counter() - t, peak - base, base)
"""


# ---- helpers ---------------------------------------------------------------------------

def base_tree(tmp: Path, commit: str = BASE) -> Path:
    """Today's code, or this code (ratios of 1) with a warning where git lacks BASE."""
    out = tmp / f"base-{commit}"
    out.mkdir()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True)
    if tar.returncode != 0:
        print(f"WARNING: no commit {commit} here (a shallow clone?): 'today' is this code, "
              "so every ratio is about 1", flush=True)
        return ROOT
    subprocess.run(["tar", "-x", "-C", str(out)], input=tar.stdout, check=True)
    # Format 5 adds files (compact, status table) to format 4's per-trial layout, which is
    # unchanged: today's code reads a format-5 study before compaction once told it may.
    store = out / "trainables" / "store.py"
    store.write_text(store.read_text().replace("FORMAT_VERSION = 4", "FORMAT_VERSION = 5"))
    return out


def env_for(code: Path, extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(code), **(extra or {})}


def cli(code: Path, *args, env=None, timeout=3600) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "study.cli", *args], capture_output=True, text=True,
                       env=env or env_for(code), timeout=timeout, cwd=str(code))
    if p.returncode not in (0, 130):
        raise RuntimeError(f"vaestudy {' '.join(args)} ({code}): {p.stderr[-2000:]}")
    return time.perf_counter() - t, p.stdout


def snippet(code: Path, text: str, *args, env=None) -> list[float]:
    p = subprocess.run([sys.executable, "-c", text, *args], capture_output=True, text=True,
                       env=env or env_for(code), cwd=str(code), timeout=7200)
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    return [float(v) for v in p.stdout.strip().splitlines()[-1].split()]


def median(fn, reps: int) -> tuple[float, object]:
    got = [fn() for _ in range(reps)]
    times = [g[0] if isinstance(g, tuple) else g for g in got]
    return statistics.median(times), got[-1]


class Table:
    def __init__(self):
        self.rows = []

    def add(self, what: str, n: int, today, new, unit="s", target="", note=""):
        self.rows.append((what, n, today, new, unit, target, note))
        ratio = f"{today / new:.1f}x" if isinstance(today, (int, float)) and new else "-"
        print(f"  {what:<34} n={n:<6} today={_fmt(today)} new={_fmt(new)} {unit} {ratio} "
              f"{target} {note}", flush=True)

    def show(self):
        print("\n| measure | trials | today (BASE) | new | unit | today/new | target | note |")
        print("|---|---:|---:|---:|---|---:|---|---|")
        for what, n, today, new, unit, target, note in self.rows:
            ratio = f"{today / new:.1f}x" if isinstance(today, (int, float)) and new else "-"
            print(f"| {what} | {n} | {_fmt(today)} | {_fmt(new)} | {unit} | {ratio} | {target} "
                  f"| {note} |")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)


# ---- the synthetic study ----------------------------------------------------------------

def spec_raw(name: str, n: int, epochs: int, H: int, codes: int) -> dict:
    sig = [round(0.01 * (k + 1), 4) for k in range(min(10, n))]
    return {"name": name, "seeds": list(range(max(1, n // len(sig)))), "noise": {"sigma2": sig},
            "dataset": {"name": "intrinsic", "n": 200, "factors": 4},
            "model": {"latent_dim": H}, "train": {"epochs": epochs},
            "eval": {"traversals": False, "codes_points": codes}}


def _write_chunk(args) -> list[dict]:
    import synthetic
    from resultstore.store import ResultStore

    root, name, items, epochs, H, codes, every = args
    store = ResultStore(root, name)
    return [synthetic.write_trial(store, i, epochs=epochs, H=H, every=every, codes=codes,
                                  state=state, trial=(tid, cfg))
            for i, tid, cfg, state in items]


def generate(root: str, raw: dict, epochs: int, H: int, codes: int, every: int,
             workers: int = 2) -> tuple[float, int]:
    """Write the study; returns (seconds, trials)."""
    from study.spec import parse, trial_configs
    from resultstore.format import FORMAT_VERSION
    from resultstore.store import ResultStore

    spec = parse(raw)
    configs = trial_configs(spec)
    states = ["diverged" if i % 50 == 7 else "completed" for i in range(len(configs))]
    items = [(i, c.trial_id(), c.to_dict(), s) for i, (c, s) in enumerate(zip(configs, states))]
    t0 = time.perf_counter()
    chunks = [items[k::workers * 8] for k in range(workers * 8)]
    with ProcessPoolExecutor(workers) as pool:
        rows = sum(pool.map(_write_chunk, [(root, raw["name"], c, epochs, H, codes, every)
                                           for c in chunks]), [])
    store = ResultStore(root, raw["name"])
    started = time.time() - 3600
    store.write_json(store.path("study.json"), {
        "name": spec.name, "format_version": FORMAT_VERSION, "spec": raw,
        "spec_json": spec.to_json(), "size": spec.size_line(),
        "trials": [{"id": i[1], "config": i[2]} for i in items], "started": started,
        "finished": time.time()})
    for r in rows:
        r.update(started=started, updated=time.time())
    store.write_status_table(rows, final=True, started=started, cpu=1.0, gpu=0.0)
    return time.perf_counter() - t0, len(items)


# ---- sections ------------------------------------------------------------------------------

def study_section(tab: Table, label: str, root: str, name: str, base: Path | None, a, env=None,
                  requests=None) -> None:
    """status, resume planning, report tables, compaction, resume on one synthetic study."""
    from study import runner
    from study.spec import parse, trial_configs
    from resultstore.store import ResultStore

    path = f"{root}/{name}"
    n = len(ResultStore(root, name).read_json(ResultStore(root, name).path("study.json"))["trials"])
    count = requests or (lambda fn: (fn(), None))

    def status(code):
        return cli(code, "status", path, env=env_for(code, env))[0]

    new, today, req_new, req_old = [], [], [], []
    for _ in range(a.status_reps):              # alternating, so both see the same load
        t, r = count(lambda: status(ROOT))
        new.append(t), req_new.append(r)
        if base:
            t, r = count(lambda: status(base))
            today.append(t), req_old.append(r)
    tab.add(f"{label}: status", n, statistics.median(today) if today else None,
            statistics.median(new), target="< 5 s",
            note=(f"median of {a.status_reps} alternating calls; requests per call today "
                  f"{req_old[0] if req_old else None}, new {req_new[0]}")
            if req_new[0] is not None else f"median of {a.status_reps}")
    st = ResultStore(root, name)
    table = st.read_bytes(st.path("status.parquet"))
    st.delete(st.path("status.parquet"))
    files, req_files = count(lambda: median(lambda: status(ROOT), a.reps)[0])
    st.write_bytes(st.path("status.parquet"), table)
    tab.add(f"{label}: status, no table (files)", n, None, files,
            note=f"requests {req_files}" if req_files is not None else "parallel status reads")
    meta = st.read_meta()
    trials = runner.recorded(meta, trial_configs(parse(meta["spec"])))
    plan_t, (_, (_, todo)) = median(lambda: _timed(lambda: runner.plan(st, trials)), a.reps)
    tab.add(f"{label}: resume plan (table)", n, None, plan_t, note=f"{len(todo)} to run")
    drv = snippet(ROOT, DRIVER_SNIPPET, root, name, env=env_for(ROOT, env))
    tab.add(f"{label}: driver peak RSS (plan+table+status)", n, None, drv[1], unit="MB",
            target="< 2048 MB")
    if base and not a.skip_old_tables:
        old = snippet(base, TABLES_SNIPPET, root, name, env=env_for(base, env))
        tab.add(f"{label}: report tables, today's loader", n, old[0], None)
    new_tables = snippet(ROOT, TABLES_SNIPPET, root, name, env=env_for(ROOT, env))
    tab.add(f"{label}: report tables (per-trial files)", n, None, new_tables[0],
            target="< 30 s", note=f"peak RSS {new_tables[1]:.0f} MB")
    files_before = _count_files(st)
    from resultstore.compact import compact

    (ct, _), req_c = count(lambda: _timed(lambda: compact(st, grace_s=0)))
    tab.add(f"{label}: compact", n, None, ct,
            note=f"files {files_before} -> {_count_files(st)}" +
                 (f", requests {req_c}" if req_c is not None else ""))
    after = snippet(ROOT, TABLES_SNIPPET, root, name, env=env_for(ROOT, env))
    tab.add(f"{label}: report tables (compacted)", n, None, after[0], target="< 30 s",
            note=f"peak RSS {after[1]:.0f} MB")
    (rt, _), req_r = count(lambda: cli(ROOT, "resume", path, "--no-report",
                                       env=env_for(ROOT, env)))
    tab.add(f"{label}: resume a finished study (CLI)", n, None, rt, target="seconds, no trial",
            note=f"requests {req_r}" if req_r is not None else "")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _count_files(store) -> int:
    return len(store.backend.walk(store.base))


def local_section(tab: Table, tmp: Path, base: Path, a) -> None:
    """The --base-trials study, read by today's code too; then the --trials one."""
    for n, old in ((a.base_trials, base), (a.trials, None)):
        if n <= 0:
            continue
        root = str(tmp / f"local{n}")
        raw = spec_raw(f"syn{n}", n, a.epochs, a.factors, a.codes)
        secs, n = generate(root, raw, a.epochs, a.factors, a.codes, a.every)
        print(f"  wrote {n} synthetic trials locally in {secs:.0f} s", flush=True)
        study_section(tab, "local", root, raw["name"], old, a)


@contextlib.contextmanager
def moto(tmp: Path):
    """A moto S3 server on loopback with a bucket "bench"; yields (env, request counter)."""
    port = _free_port()
    log = open(tmp / "moto.log", "w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_ALLOW_HTTP": "true"}
    os.environ.update(env)

    def count(fn):
        before = _requests(tmp / "moto.log")
        out = fn()
        return out, _requests(tmp / "moto.log") - before

    try:
        _wait_port(port)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        yield env, count
    finally:
        server.terminate()
        server.wait()
        for k in env:
            os.environ.pop(k, None)


def s3_section(tab: Table, tmp: Path, base: Path, a) -> None:
    with moto(tmp) as (env, count):
        root = "s3://bench/studies"
        raw = spec_raw(f"s3syn{a.s3_trials}", a.s3_trials, a.epochs, a.factors, a.codes)
        secs, n = generate(root, raw, a.epochs, a.factors, a.codes, a.every, workers=4)
        print(f"  wrote {n} synthetic trials to S3 in {secs:.0f} s", flush=True)
        study_section(tab, "s3", root, raw["name"], base, a, env=env, requests=count)


def callbacks_section(tab: Table, tmp: Path, base: Path, a) -> None:
    """Driver time inside Tune's callbacks (the status tracker) per 1,000 completions, and
    status-table bytes written per 1,000 completions, with a table of --trials rows: the
    hooks of --completions trials (start, result, complete) called back to back, as Tune
    would call them; how each ended is in its status file, as a trial leaves it. Today's
    code: main before the background writer (BASE_DRIVER)."""
    from study.tracker import WRITE_EVERY_S

    old = base_tree(tmp, BASE_DRIVER)
    n, k = a.trials, min(a.completions, a.trials)
    places = [("local", str(tmp / "cb"), None)]
    if "callbacks-s3" not in a.skip.split(","):
        places.append(("s3", "s3://bench/cb", "moto"))
    for label, root, server in places:
        with (moto(tmp) if server else contextlib.nullcontext((None, None))) as (env, _):
            got = {code: snippet(code, CALLBACK_SNIPPET, root, f"cb-{i}", str(n), str(k),
                                 env=env_for(code, env))
                   for i, code in enumerate((old, ROOT))}
        (t_old, b_old, w_old, _), (t_new, b_new, w_new, wall) = got[old], got[ROOT]
        tab.add(f"{label}: driver s in callbacks / 1,000 completions", n, t_old, t_new,
                target="< 1 s", note=f"{k} completions")
        tab.add(f"{label}: status-table bytes / 1,000 completions", n, b_old, b_new, unit="B",
                note=f"writes today {w_old:.0f}, new {w_new:.0f} (at most one per "
                     f"{WRITE_EVERY_S:.0f} s: {k} completions took {wall:.1f} s here)")


def resume_section(tab: Table, tmp: Path, base: Path, a) -> None:
    """`vaestudy resume` of a finished --resume-trials study on the moto server, with its
    report written: command to exit and requests, new code first, then today's
    (BASE_DRIVER), which rewrites the report."""
    old = base_tree(tmp, BASE_DRIVER) if not (tmp / f"base-{BASE_DRIVER}").exists() \
        else tmp / f"base-{BASE_DRIVER}"
    with moto(tmp) as (env, count):
        root = "s3://bench/resume"
        raw = spec_raw(f"done{a.resume_trials}", a.resume_trials, a.epochs, a.factors, a.codes)
        generate(root, raw, a.epochs, a.factors, a.codes, a.every, workers=2)
        path = f"{root}/{raw['name']}"
        cli(ROOT, "report", path, env=env_for(ROOT, env))
        got = {}
        got["today"] = None, None
        codes = (("new", ROOT),) + ((("today", old),) if "resume-today" not in a.skip else ())
        for label, code in codes:
            (secs, out), req = count(lambda: cli(code, "resume", path, env=env_for(code, env)))
            got[label] = secs, req
            print(f"  {label}: {secs:.1f} s, {req} requests; {out.strip().splitlines()[-1]}",
                  flush=True)
    tab.add("s3: resume a finished study, report kept", a.resume_trials, got["today"][0],
            got["new"][0], target="< 5 s",
            note=f"requests today {got['today'][1]}, new {got['new'][1]} (target < 30)")


def _requests(log: Path) -> int:
    return sum(1 for line in open(log, errors="replace") if re.search(r'" \d{3} ', line))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError("moto server did not start")


def tune_section(tab: Table, tmp: Path, base: Path, a) -> None:
    """K one-epoch trials through `vaestudy run`, today's code and new; overhead per trial =
    (study wall - K x sequential seconds per trial / concurrency) / K, Ray's start included."""
    import yaml

    K = a.tune_trials
    trial = {"dataset": {"name": "intrinsic", "n": 200, "factors": 2},
             "model": {"latent_dim": 2}, "train": {"epochs": 1},
             "eval": {"traversals": False, "codes_points": 10}, "resources": {"cpu": 1},
             "max_concurrent": 2}
    per = _sequential_seconds(tmp, trial, 10)
    for label, code in (("today", base), ("new", ROOT)):
        spec = tmp / f"tune-{label}.yaml"
        spec.write_text(yaml.safe_dump({"name": f"tune{label}", "seeds": list(range(K)), **trial}))
        env = env_for(code, {"RAY_TMPDIR": tempfile.mkdtemp(prefix="r", dir="/tmp")})
        wall, _ = cli(code, "run", str(spec), "--out", str(tmp / "tune"), "--no-report", env=env)
        over = (wall - K * per / 2) / K
        setattr(a, f"_over_{label}", over)
        print(f"  {label}: {K} trials in {wall:.0f} s; sequential {per:.2f} s/trial", flush=True)
    tab.add("Tune study: overhead per trial", K, a._over_today, a._over_new, target="< 0.25 s",
            note=f"one-epoch trials, 2 at a time; {per:.2f} s of work each")


def _sequential_seconds(tmp: Path, trial: dict, n: int) -> float:
    from trainables.config import TrialConfig
    from resultstore.store import ResultStore
    from trainables.train import run_trial

    keys = {k: v for k, v in trial.items() if k not in ("resources", "max_concurrent")}
    t = time.perf_counter()
    for seed in range(n):
        cfg = TrialConfig.from_dict({**keys, "train": {"epochs": 1, "seed": 10_000 + seed,
                                                       "threads": 1}})
        run_trial(cfg, ResultStore(str(tmp / "seq"), "seq"), log=lambda s: None)
    return (time.perf_counter() - t) / n


def data_section(tab: Table, tmp: Path, base: Path, a) -> None:
    """One real trial on an image folder of M 64x64 RGB images: its peak RSS above its own
    baseline, the same trial on 300 images (torch, the model and its batches), against the
    data's uint8 size. The cache is built beforehand (its build is printed)."""
    size = a.images * 64 * 64 * 3 / 2**20
    env = env_for(ROOT, {"VAESTUDY_CACHE": str(tmp / "cache")})
    cfg = {"dataset": {"name": "image_folder"},
           "model": {"latent_dim": 8}, "train": {"epochs": 1, "batch_size": 100, "threads": 2},
           "eval": {"traversals": False, "codes_points": 0, "max_points": 500}}
    peaks = {}
    for n in (300, a.images):
        cfg["dataset"]["path"] = str(_image_folder(tmp / f"faces{n}", n))
        build = snippet(ROOT, TRIAL_SNIPPET, str(tmp / "data"), f"build{n}", json.dumps(cfg),
                        env=env)
        print(f"  {n} images: first trial (decodes into the cache) {build[0]:.0f} s", flush=True)
        for label, code in (("today", base), ("new", ROOT)):
            cfg["train"]["seed"] = 1 if label == "today" else 2
            peaks[label, n] = snippet(code, TRIAL_SNIPPET, str(tmp / "data"), f"{label}{n}",
                                      json.dumps(cfg), env={**env, "PYTHONPATH": str(code)})
    above = {k: peaks[k, a.images][1] - peaks[k, 300][1] for k in ("today", "new")}
    tab.add("trial RSS above baseline / uint8 data", a.images, above["today"] / size,
            above["new"] / size, unit="x", target="<= 1.5x",
            note=f"uint8 data {size:.0f} MB; above baseline today {above['today']:.0f} MB, new "
                 f"{above['new']:.0f} MB; baseline (300 images) {peaks['new', 300][1]:.0f} MB "
                 f"above imports")


def _image_folder(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return folder


def checkpoint_section(tab: Table, tmp: Path, base: Path, a) -> None:
    """Checkpoint bytes a completed MNIST-sized trial leaves: today's code and new."""
    cfg = {"dataset": {"name": "intrinsic", "n": 300, "factors": 2}, "model": {"latent_dim": 10},
           "train": {"epochs": 2, "threads": 1}, "eval": {"traversals": False},
           "checkpoint": {"every": 1}}
    got = {}
    for label, code in (("today", base), ("new", ROOT)):
        snippet(code, TRIAL_SNIPPET, str(tmp / "ck"), label, json.dumps(cfg))
        got[label] = sum(p.stat().st_size for p in (tmp / "ck" / label / "checkpoints").rglob("*")
                         if p.is_file())
    tab.add("checkpoint bytes per completed trial", 1, got["today"], got["new"], unit="B",
            target="<= 1/3 of today")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=10_000)
    p.add_argument("--base-trials", type=int, default=1000, help="the study today's code reads too")
    p.add_argument("--s3-trials", type=int, default=1000)
    p.add_argument("--tune-trials", type=int, default=200)
    p.add_argument("--resume-trials", type=int, default=60,
                   help="the finished study the resume section resumes (on the moto server)")
    p.add_argument("--completions", type=int, default=1000,
                   help="trial completions the callbacks section drives (its table: --trials)")
    p.add_argument("--images", type=int, default=30_000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--factors", type=int, default=128)
    p.add_argument("--codes", type=int, default=100, help="codes rows per trial (default 100)")
    p.add_argument("--every", type=int, default=5, help="evaluations per segment (checkpoint.every)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--status-reps", type=int, default=7, help="alternating status calls")
    p.add_argument("--skip", default="", help="comma list of: local,s3,tune,data,checkpoint,callbacks,callbacks-s3,resume,"
                        "resume-today")
    p.add_argument("--skip-old-tables", action="store_true")
    p.add_argument("--base", default=BASE, help=f"'today's' commit (default {BASE}; "
                   "d2190cc: main before the results layer, issue 20)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument("--smoke-test", action="store_true")
    a = p.parse_args()
    if a.smoke_test:
        a.trials, a.base_trials, a.s3_trials, a.tune_trials, a.images = 60, 20, 20, 4, 900
        a.completions, a.resume_trials = 20, 20
        a.skip += ",callbacks-s3,resume-today"
        a.epochs, a.factors, a.codes, a.reps, a.status_reps = 4, 8, 5, 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    tab = Table()
    try:
        base = base_tree(tmp, a.base)
        skip = set(a.skip.split(","))
        for name, fn in (("checkpoint", checkpoint_section), ("local", local_section),
                         ("s3", s3_section), ("data", data_section), ("tune", tune_section),
                         ("callbacks", callbacks_section), ("resume", resume_section)):
            if name not in skip:
                print(f"== {name}", flush=True)
                fn(tab, tmp, base, a)
        tab.show()
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
