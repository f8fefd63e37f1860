"""Extending a finished study on S3 (moto on loopback): how long until the plan, and how
many trials train.

    python bench/bench_extend.py [--trials 60] [--smoke-test]

A finished study of N trials (10 sigma2 x N/10 seeds) is written through the real
result store by bench/synthetic.py (no training: its rows say code version
`synthetic`) and compacted, as a finished driver leaves it. Then
`vaestudy extend ROOT/STUDY --set seeds=[...]` doubles the seeds, as a user would
type it, in a fresh process: the figure is the wall time from the command's start
(Python's start-up and imports included) to its `plan:` line, beside the same for
`vaestudy resume` of the finished study (the floor: imports, storage client, lease),
both after one warm-up import so that neither pays for a cold file cache. Trainings are
counted from storage: a trial trained by the extension is one whose status file
appeared or changed; the N kept ones must be unchanged, byte for byte.
`--smoke-test`: 4 trials extended by 4, one epoch (a CI check of the same path).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_scale import _free_port, _wait_port, generate  # noqa: E402

ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
       "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def spec_raw(name: str, n: int, epochs: int) -> dict:
    sig = [round(0.01 * (k + 1), 4) for k in range(min(10, n))]
    return {"name": name, "seeds": list(range(max(1, n // len(sig)))), "noise": {"sigma2": sig},
            "dataset": {"name": "intrinsic", "n": 200, "factors": 2},
            "model": {"latent_dim": 4}, "train": {"epochs": epochs, "threads": 1,
                                                  "device": "cpu"},
            "eval": {"traversals": False, "codes_points": 50}, "checkpoint": {"every": epochs},
            "resources": {"cpu": 1}, "max_concurrent": 2}


def statuses(store) -> dict[str, bytes]:
    names = [n for n in store.listdir(store.path("status")) if n.endswith(".json")]
    return {n[:-5]: store.read_bytes(store.path("status", n)) for n in names}


def timed(args: list[str], log: Path) -> tuple[float | None, float, int]:
    """(seconds to the plan: line, seconds in all, exit code) of `vaestudy ARGS`."""
    cmd = [sys.executable, "-m", "study.cli", *args]
    t0 = time.perf_counter()
    plan_s = None
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in p.stdout:
            out.write(line)
            if plan_s is None and line.startswith("plan:"):
                plan_s = time.perf_counter() - t0
                print(f"  {line.strip()}  ({plan_s:.2f} s after the command)", flush=True)
        rc = p.wait()
    return plan_s, time.perf_counter() - t0, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--smoke-test", action="store_true")
    a = ap.parse_args()
    if a.smoke_test:
        a.trials, a.epochs = 4, 1
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-extend-{os.getpid()}"
    tmp.mkdir(parents=True)
    port = _free_port()
    os.environ.update(ENV, VAESTUDY_TUNE_DIR=str(tmp / "tune"))
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                             "127.0.0.1", "-p", str(port)], stdout=open(tmp / "moto.log", "w"),
                            stderr=subprocess.STDOUT)
    try:
        _wait_port(port)
        print(run(a, port, tmp))
    finally:
        moto.terminate()
        moto.wait()


def run(a, port: int, tmp: Path) -> str:
    import boto3

    from resultstore.compact import compact
    from resultstore.store import ResultStore

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket="bench")
    root = f"s3://bench/res?endpoint_override=127.0.0.1:{port}&scheme=http"
    raw = spec_raw(f"ext{a.trials}", a.trials, a.epochs)
    secs, n = generate(root, raw, a.epochs, 4, 50, a.epochs, workers=2)
    store = ResultStore(root, raw["name"])
    compact(store, grace_s=0.0, log=lambda line: None)
    print(f"finished study: {n} synthetic trials written and compacted in {secs:.1f} s",
          flush=True)
    before = statuses(store)
    seeds = list(range(2 * len(raw["seeds"])))
    study = root.replace("/res?", f"/res/{raw['name']}?")
    # the same warm file cache for both commands measured: one import of what they import
    subprocess.run([sys.executable, "-c", "import study.extend, trainables.data, boto3, pandas"],
                   cwd=ROOT, check=True)
    base_s, _, rc = timed(["resume", study, "--no-report"], tmp / "resume.log")
    assert rc == 0, (tmp / "resume.log").read_text()[-3000:]
    before = statuses(store)
    plan_s, total, rc = timed(["extend", study, "--set", f"seeds={seeds}", "--no-report"],
                              tmp / "extend.log")
    after = statuses(store)
    trained = [t for t in after if before.get(t) != after[t]]
    changed = [t for t in before if before[t] != after.get(t)]
    assert rc == 0, (tmp / "extend.log").read_text()[-3000:]
    assert plan_s is not None, "no plan: line"
    assert len(trained) == n and not changed, (len(trained), changed[:3])
    return (f"extend {n} finished trials by {n} seeds on moto S3: trained {len(trained)} "
            f"(kept {len(before)} unchanged); command -> plan: {plan_s:.2f} s "
            f"(target < 5 s; `vaestudy resume` of the same finished study: {base_s:.2f} s); "
            f"whole extension {total:.0f} s; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} cores")


if __name__ == "__main__":
    main()
