"""A trial with its results on a loopback S3 server (moto) against the same trial on local disk.

    python bench/bench_storage.py [--smoke-test] [--repeats 3]

Measures, in one run, with the medians of --repeats runs:
  - throughput (epochs/s of `run_trial`, evaluation and writes included), S3 vs local disk;
    target >= 0.95x;
  - object-store requests per trial (20 epochs, evaluated every epoch, checkpoint every 5),
    counted in moto's request log, for the write path before this change (trainables/ of
    commit BEFORE, run from a `git archive` of it) and now; target <= 3 per evaluation;
  - the same trial fenced (a lease generation, as a study's trials are): the HEADs it adds;
  - store calls made on the training thread between its first and last report (the loop):
    target 0, every write goes through the background writer.
moto serves ~80 PUTs/s here, so the trials stay at hundreds of objects.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import io
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BEFORE = "d2190cc"                      # main before issue 20: the previous results layer
TRIAL = {"dataset.name": "intrinsic", "dataset.n": 1500, "dataset.factors": 2,
         "model.latent_dim": 4, "train.epochs": 20, "train.threads": 1, "eval.every": 1,
         "eval.traversals": False, "checkpoint.every": 5}

RUN = """
import json, sys, time
from trainables.config import TrialConfig
try:                                                   # the code of BEFORE
    from trainables.store import ResultStore
    kw = {}
except ImportError:
    from resultstore.store import ResultStore
    kw = {"fence": int(sys.argv[4])} if len(sys.argv) > 4 else {}
from trainables.train import run_trial
cfg = TrialConfig.from_dict(json.loads(sys.argv[1]))
t0 = time.perf_counter()
run_trial(cfg, ResultStore(sys.argv[2], sys.argv[3], **kw), log=lambda s: None)
print(time.perf_counter() - t0)
"""


def run_once(code_root: Path, trial: dict, root: str, study: str, fence: int | None = None
             ) -> float:
    """Seconds of one trial, run by the trainables/ under code_root in a fresh process
    (`fence`: as a trial of a driver holding that lease generation)."""
    import json

    env = {**os.environ, "PYTHONPATH": str(code_root)}
    extra = [str(fence)] if fence is not None else []
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(trial), root, study, *extra],
                         env=env,
                         capture_output=True, text=True, timeout=900, cwd=code_root)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return float(out.stdout.strip().splitlines()[-1])


def old_tree(tmp: Path) -> Path | None:
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "trainables"],
                          capture_output=True)
    if blob.returncode != 0:
        return None
    with tarfile.open(fileobj=io.BytesIO(blob.stdout)) as t:
        t.extractall(tmp / "before", filter="data")
    return tmp / "before"


def training_thread_calls(trial: dict, root: str) -> int:
    """Store filesystem calls on the training thread between its first and last report."""
    from trainables.config import TrialConfig
    from resultstore.store import ResultStore
    from trainables.train import run_trial

    store = ResultStore(root, "threads")
    calls, state = [], {"loop": False}
    main = threading.current_thread()

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            attr = getattr(self.inner, name)
            if not callable(attr):
                return attr

            def call(*a, **k):
                if state["loop"] and threading.current_thread() is main:
                    calls.append(name)
                return attr(*a, **k)
            return call

    store.backend = Spy(store.backend)
    reports = []

    def report(m):
        reports.append(m["epoch"])
        state["loop"] = len(reports) < trial["train.epochs"] - 1   # off after the last one

    run_trial(TrialConfig.from_dict(trial), store, report=report, log=lambda s: None)
    return len(calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke-test", action="store_true", help="one run each, 6 epochs")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    trial = dict(TRIAL)
    repeats = args.repeats
    if args.smoke_test:
        trial.update({"train.epochs": 6, "checkpoint.every": 2, "dataset.n": 600})
        repeats = 1
    from support.procs import S3, S3_ENV, Procs

    os.environ.update(S3_ENV)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        procs = Procs(tmp, tmp)
        try:
            report(trial, repeats, tmp, S3(procs))
        finally:
            procs.stop()


def report(trial: dict, repeats: int, tmp: Path, s3) -> None:
    evals = trial["train.epochs"] // trial["eval.every"]
    local, remote, reqs = [], [], {}
    for i in range(repeats):                         # interleaved: drift hits both alike
        local.append(run_once(ROOT, trial, str(tmp / "local"), f"l{i}"))
        bucket = s3.bucket()
        before = sum(s3.requests(bucket).values())
        remote.append(run_once(ROOT, trial, s3.uri(bucket), f"s{i}"))
        reqs.setdefault("now", []).append(sum(s3.requests(bucket).values()) - before)
        bucket = s3.bucket()
        run_once(ROOT, trial, s3.uri(bucket), f"f{i}", fence=1)
        reqs.setdefault("fenced", []).append(sum(s3.requests(bucket).values()))
    old = old_tree(tmp)
    if old is not None:
        for i in range(repeats):
            bucket = s3.bucket()
            run_once(old, trial, s3.uri(bucket), f"o{i}")
            reqs.setdefault("before", []).append(sum(s3.requests(bucket).values()))
    on_thread = training_thread_calls(trial, s3.uri(s3.bucket()))

    e = trial["train.epochs"]
    tl, tr = statistics.median(local), statistics.median(remote)
    print(f"trial: {e} epochs, eval every {trial['eval.every']}, checkpoint every "
          f"{trial['checkpoint.every']}; medians of {repeats}")
    print(f"{'measure':<44}{'baseline':>12}{'now':>12}{'ratio':>9}{'target':>10}")
    print(f"{'epochs/s (baseline: local disk, now: S3)':<44}{e / tl:>12.3f}{e / tr:>12.3f}"
          f"{tl / tr:>8.2f}x{'>= 0.95x':>10}")
    now = statistics.median(reqs["now"])
    if "before" in reqs:
        was = statistics.median(reqs["before"])
        print(f"{'S3 requests per trial (baseline: ' + BEFORE + ')':<44}{was:>12.0f}{now:>12.0f}"
              f"{now / was:>8.2f}x{'':>10}")
        print(f"{'S3 requests per evaluation':<44}{was / evals:>12.2f}{now / evals:>12.2f}"
              f"{'':>9}{'<= 3':>10}")
    else:
        print(f"{'S3 requests per evaluation (no git: no baseline)':<44}{'':>12}"
              f"{now / evals:>12.2f}{'':>9}{'<= 3':>10}")
    fenced = statistics.median(reqs["fenced"])
    print(f"{'S3 requests per trial, fenced (lease gen 1)':<44}{now:>12.0f}{fenced:>12.0f}"
          f"{fenced / now:>8.2f}x{'':>10}")
    budget = f"<= {evals + 4}"             # one per write group, + begin, finish, keep, traversal
    print(f"{'  fencing checks per trial (HEADs)':<44}{'':>12}{fenced - now:>12.0f}{'':>9}"
          f"{budget:>10}")
    print(f"{'store calls on the training thread (loop)':<44}{'':>12}{on_thread:>12}{'':>9}"
          f"{'0':>10}")


if __name__ == "__main__":
    main()
