"""Studies on S3-compatible storage, against a real server: moto's, on 127.0.0.1.

The endpoint reaches every process through the URI's query; credentials only
through the environment, and they are found in no stored object nor in Tune's
folder. Each test gets a fresh bucket of the module's server.
"""
import json
import signal
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from study.cli import main
from support.procs import S3_ENV, Procs, S3, cli, free_port, procs, s3, s3_server  # noqa: F401
from resultstore.store import ResultStore
from resultstore.uri import StoreError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import synthetic  # noqa: E402

SPEC = {"name": "grid", "seeds": [0, 1], "dataset": {"name": "intrinsic", "n": 600, "factors": 2},
        "model": {"latent_dim": 3}, "noise": {"sigma2": [0.01, 0.1]},
        "train": {"epochs": 6, "fault_epoch_delay": 1.0},      # killed with 4 s of epochs left
        "eval": {"every": 1, "traversals": False}, "checkpoint": {"every": 2},
        "resources": {"cpu": 1}, "max_concurrent": 2}


def _spec(procs, raw: dict, uri: str):
    path = procs.tmp / "spec.yaml"
    path.write_text(yaml.safe_dump({**raw, "storage": uri}))
    return path


def _secret_nowhere(s3, bucket: str, procs) -> None:
    """No stored object and no file of Tune's folder holds the secret key."""
    secret = S3_ENV["AWS_SECRET_ACCESS_KEY"].encode()
    client = s3.client()
    for key in s3.keys(bucket):
        assert secret not in client.get_object(Bucket=bucket, Key=key)["Body"].read(), key
    for f in (procs.tmp / "tune").rglob("*"):
        assert not f.is_file() or secret not in f.read_bytes(), f


def _wait_for(s3, bucket: str, suffix: str, driver, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(k.endswith(suffix) for k in s3.keys(bucket)):
            return
        assert driver.poll() is None, "the driver ended before it could be killed"
        time.sleep(0.5)
    raise AssertionError(f"no {suffix} within {timeout} s")


@pytest.mark.slow
def test_grid_on_s3_killed_resumed_then_status_and_report(s3, procs):
    bucket = s3.bucket()
    uri = s3.uri(bucket)
    study = uri.replace("/res?", "/res/grid?")
    driver = procs.start(cli("run", str(_spec(procs, SPEC, uri)), "--no-report"), "run",
                         env=s3.env())
    _wait_for(s3, bucket, "epoch-000002.pt", driver)
    driver.send_signal(signal.SIGKILL)            # the driver alone, as a crash would
    driver.wait()
    procs.kill(driver)                            # and what Ray left of its session
    rc, out = procs.run(cli("resume", study, "--no-report"), "resume", env=s3.env())
    assert rc == 0, out[-3000:]
    assert "4 completed" in out

    store = ResultStore(uri, "grid")
    trials = pl.scan_parquet(store.glob("trials"), storage_options=store.storage_options).collect()
    assert trials.height == 4 * 6 and trials.n_unique(["trial_id", "epoch"]) == trials.height
    assert any(s.get("attempts", 1) > 1 for s in store.all_status()), "nothing was resumed"
    keys = s3.keys(bucket)
    assert not any("_tune" in k or k.startswith("res/grid/grid/") for k in keys)
    written = [k for k in keys if k.split("/")[2] in ("trials", "factors", "codes", "status")]
    assert written and not any(k.endswith("/") for k in written), "directory markers"

    rc, out = procs.run(cli("status", study), "status", env=s3.env())
    assert rc == 0 and "completed: 4" in out, out
    rc, out = procs.run(cli("report", study, "--no-higgins"), "report", env=s3.env())
    assert rc == 0, out[-3000:]
    assert "res/grid/report.html" in s3.keys(bucket)
    _secret_nowhere(s3, bucket, procs)


@pytest.mark.slow
def test_search_on_s3_mirrors_its_journal_and_resumes_from_it(s3, procs):
    import optuna

    bucket = s3.bucket()
    uri = s3.uri(bucket)
    raw = {**SPEC, "name": "srch", "num_samples": 4, "max_concurrent": 2,
           "noise": {"sigma2": {"loguniform": [0.005, 0.2]}},
           "search": {"optuna": {"sampler": "random", "seed": 3}}}
    spec = _spec(procs, raw, uri)
    driver = procs.start(cli("run", str(spec), "--no-report"), "run", env=s3.env())
    _wait_for(s3, bucket, "epoch-000004.pt", driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    procs.kill(driver)
    procs.env["VAESTUDY_TUNE_DIR"] = str(procs.tmp / "new-head")   # resumed on a new head
    rc, out = procs.run(cli("resume", uri.replace("/res?", "/res/srch?"), "--no-report"),
                        "resume", env=s3.env())
    assert rc == 0, out[-3000:]

    store = ResultStore(uri, "srch")
    pieces = [k for k in s3.keys(bucket) if "/optuna/journal/" in k]
    assert len(pieces) > 4, pieces                  # one piece per ask and per tell
    journal = procs.tmp / "journal.log"
    journal.write_bytes(b"".join(store.read_bytes(f"{bucket}/{k}") for k in sorted(pieces)))
    from optuna.storages.journal import JournalFileBackend
    study = optuna.load_study(study_name="srch", storage=optuna.storages.JournalStorage(
        JournalFileBackend(str(journal))))
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and study.metric_names == ["evlb", "kl_qz_pz"]
    rows = pl.scan_parquet(store.glob("trials"), storage_options=store.storage_options).collect()
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height
    assert set(rows["trial_id"]) == {t.user_attrs["trial_id"] for t in done}
    for t in done:
        assert t.user_attrs["epoch"] == 6 and "n_used_factors" in t.user_attrs
    _secret_nowhere(s3, bucket, procs)


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "secret in the URI"])
def test_unusable_s3_storage_is_one_line_and_writes_nothing(s3, capsys, tmp_path, case):
    bucket = s3.bucket()
    uri = {"missing bucket": s3.uri("no-such-bucket-x"),
           "unreachable endpoint": f"s3://{bucket}/res?endpoint_override=127.0.0.1:"
                                   f"{free_port()}&scheme=http",
           "secret in the URI": s3.uri(bucket) + "&secret_key=hunter2"}[case]
    assert main(["run", "--set", "dataset.n=300", "--out", uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hunter2" not in err, err
    assert {"missing bucket": "does not exist",
            "unreachable endpoint": "the endpoint is unreachable",
            "secret in the URI": "credentials come only from the environment"}[case] in err
    assert s3.keys(bucket) == []
    import ray
    assert not ray.is_initialized()


def test_wrong_credentials_are_one_line_and_write_nothing(procs, capsys, monkeypatch):
    """A second moto server with authentication on: only its IAM user's key is accepted."""
    port = free_port()
    procs.start([str(S3.moto_server()), "-H", "127.0.0.1", "-p", str(port)], "moto-auth",
                env={**S3_ENV, "INITIAL_NO_AUTH_ACTION_COUNT": "3"})
    from support.procs import wait_port
    wait_port(port)
    import boto3
    kw = {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}
    iam = boto3.client("iam", aws_access_key_id="x", aws_secret_access_key="y", **kw)
    iam.create_user(UserName="u")
    iam.put_user_policy(UserName="u", PolicyName="all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                 "Resource": "*"}]}))
    key = iam.create_access_key(UserName="u")["AccessKey"]
    good = boto3.client("s3", aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"], **kw)
    good.create_bucket(Bucket="authed")
    uri = f"s3://authed/res?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    for access, secret, needle in ((key["AccessKeyId"], "wrong", "the secret key does not match"),
                                   ("AKIAUNKNOWN000000000", "x", "the access key is unknown")):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        assert main(["run", "--set", "dataset.n=300", "--out", uri]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert good.list_objects_v2(Bucket="authed").get("KeyCount", 0) == 0


def test_endpoint_and_region_come_from_the_environment_into_the_root(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    store = ResultStore("s3://b/p", "x")
    assert store.root == "s3://b/p?endpoint_override=127.0.0.1:9&region=eu-west-3&scheme=http"
    assert store.storage_options == {"aws_endpoint_url": "http://127.0.0.1:9",
                                     "aws_allow_http": "true", "aws_region": "eu-west-3"}
    assert ResultStore("s3://b/p?region=us-east-2", "x").root.endswith("region=us-east-2&scheme=http")
    with pytest.raises(StoreError, match="unknown query parameter 'colour'"):
        ResultStore("s3://b/p?colour=red", "x")


def test_segments_status_and_checkpoints_reach_s3_without_markers(s3):
    bucket = s3.bucket()
    store = ResultStore(s3.uri(bucket), "w")
    store.set_status("t1", "running")
    row = {"study": "w", "trial_id": "t1", "epoch": 1, "factor": 0, "mi": 1.0, "post_var": 0.5,
           "qstar_var": 1.0, "used": True}
    store.trial("t1").append({"factors": [row]}, 1, 1)
    store.trial("t1").checkpoint(1, {"epoch": 1}, keep=2)
    assert sorted(s3.keys(bucket)) == ["res/w/checkpoints/t1/epoch-000001.pt",
                                       "res/w/factors/t1/part-000001-000001.parquet",
                                       "res/w/status/t1.json"]
    back = pl.scan_parquet(store.glob("factors"), storage_options=store.storage_options).collect()
    assert back["mi"].to_list() == [1.0]
    assert ResultStore(s3.uri(bucket), "w").trial("t1").load_checkpoint() == {"epoch": 1}


def test_reads_are_one_get_each_and_the_report_reads_each_file_once(s3):
    """A status file, a missing one, and the report's tables of per-trial files: one GET per
    object read (no HEAD before it), and each table's files read once per report."""
    import re

    from analysis import load
    from analysis.report import Options, compute_tables

    bucket = s3.bucket()

    def requests(fn):
        """fn()'s result and its requests to the bucket, as 'METHOD path' lines."""
        start = len(s3.procs.log("moto").splitlines())
        out = fn()
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).split('"') for ln in
                 s3.procs.log("moto").splitlines()[start:]]
        return out, [" ".join(p[1].split()[:2]) for p in lines
                     if len(p) > 1 and f"/{bucket}" in p[1]]

    store = ResultStore(s3.uri(bucket), "r")
    store.set_status("t1", "running")
    st, got = requests(lambda: ResultStore(s3.uri(bucket), "r").status("t1"))
    assert st["state"] == "running" and got == [f"GET /{bucket}/res/r/status/t1.json"], got
    st, got = requests(lambda: store.status("t9"))
    assert st is None and got == [f"GET /{bucket}/res/r/status/t9.json"], got

    store = ResultStore(s3.uri(bucket), "syn")
    rows = [synthetic.write_trial(store, i, epochs=4, H=3, every=2, codes=5) for i in range(6)]
    store.write_status_table(rows, final=True, started=0.0, cpu=1.0, gpu=0.0)
    files = sorted(f for t in ("trials", "factors", "codes") for f in load.table_files(store, t))
    assert len(files) == 6 * 5                     # 2 segments of trials, factors; 1 of codes
    _, got = requests(lambda: compute_tables(s3.uri(bucket), "syn",
                                             Options(higgins=None, trial_pages=False)))
    assert not [r for r in got if r.startswith("HEAD")], got
    assert sorted(r.split()[1].lstrip("/") for r in got if "/part-" in r) == files, got
    assert len(got) <= len(files) + 15, got       # + listings, status table, study files

    from resultstore.compact import compact  # merged files: 1,000 per delete
    _, got = requests(lambda: compact(store, grace_s=0))
    assert compact(store, grace_s=0) == 0
    assert not [k for k in s3.keys(bucket) if k.startswith("res/syn/") and "/part-" in k]
    assert sorted(r.split()[1].lstrip("/") for r in got if "/part-" in r) == files, got
    assert len([r for r in got if r.startswith(("POST", "DELETE"))]) <= 3, got
    assert not [r for r in got if r.startswith("HEAD")], got
