"""Faults injected against the real storage: a moto_server S3 server on loopback behind a fault proxy
(tests/support/faultproxy.py), and local disk. Each test ends with every (trial, epoch) row
readable exactly once through `analysis.load`, and through DuckDB on a local copy."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from analysis import load
from resultstore import compact as compaction
from resultstore.backend import StorageIOError
from resultstore.check import check
from resultstore.compact import CompactionLost
from resultstore.lease import Lease
from resultstore.store import ResultStore
from support.faultproxy import FaultProxy

TRIALS, EPOCHS = 6, 2


@pytest.fixture
def s3(moto_server):
    """(root through the fault proxy, boto3 client straight to the server, proxy)."""
    import boto3

    bucket = "f-" + uuid.uuid4().hex[:12]
    client = boto3.client("s3", endpoint_url=f"http://{moto_server}")
    client.create_bucket(Bucket=bucket)
    with FaultProxy(moto_server) as proxy:
        yield (f"s3://{bucket}/res?endpoint_override={proxy.endpoint}&scheme=http"
               f"&region=us-east-1", client, bucket, proxy)


def _row(tid: str, epoch: int) -> dict:
    return {"study": "s", "trial_id": tid, "epoch": epoch, "status": "running", "noise": "specified",
            "sigma2": 0.01, "evlb": -float(epoch), "config": '{"noise": {"sigma2": 0.01}}'}


def _study(root: str) -> ResultStore:
    """Six finished trials of two epochs, written through the real per-trial handle."""
    store = ResultStore(root, "s")
    for i in range(TRIALS):
        t = store.trial(f"t{i}")
        t.begin()
        for e in range(1, EPOCHS + 1):
            t.append({"trials": [_row(t.id, e)],
                      "factors": [{"study": "s", "trial_id": t.id, "epoch": e, "factor": 0,
                                   "mi": 1.0, "post_var": 0.5, "qstar_var": 0.5, "used": True}]},
                     e, e)
        t.finish("completed")
    return store


def _exactly_once(store: ResultStore) -> None:
    rows = load.trials(store.root, "s", last=False).collect()
    assert rows.height == TRIALS * EPOCHS
    assert rows.n_unique(["trial_id", "epoch"]) == TRIALS * EPOCHS
    assert sorted(set(rows["state"])) == ["completed"]


def _duckdb_once(store: ResultStore, tmp_path: Path) -> None:
    """A plain directory reader on a local copy of the study (DuckDB's S3 extension cannot
    be installed here): the compact file and no leftover per-trial file."""
    import duckdb

    local = tmp_path / "copy"
    for table in ("trials",):
        for f in compaction.table_files(store, table):
            rel = f[len(store.base) + 1:]
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            (local / rel).write_bytes(store.read_bytes(f))
    n, distinct = duckdb.sql(
        f"select count(*), count(distinct (trial_id, epoch)) from "
        f"read_parquet('{local}/trials/**/*.parquet', union_by_name=true)").fetchall()[0]
    assert n == distinct == TRIALS * EPOCHS


def _compacts(store: ResultStore, table: str = "trials") -> list[int]:
    return [g for g, _ in compaction.listing(store, table)[0]]


def test_a_failed_get_mid_compaction_publishes_nothing_and_the_next_loses_no_row(s3, tmp_path):
    root, _, _, proxy = s3
    store = _study(root)
    proxy.fail("GET", r"/res/s/factors/t3/", times=None)     # every try of one file fails
    with pytest.raises(StorageIOError):
        compaction.compact(store, grace_s=0)
    assert _compacts(store, "trials") == [1] and _compacts(store, "factors") == []
    _exactly_once(store)                                     # readers' view: unchanged
    proxy.clear()
    assert compaction.compact(store, grace_s=0) == TRIALS
    assert _compacts(store, "factors") == [1]
    _exactly_once(store)
    _duckdb_once(store, tmp_path)
    assert check(store) == {}                                # nothing hidden or duplicated


def test_a_corrupt_object_mid_compaction_publishes_nothing(s3, tmp_path):
    root, client, bucket, _ = s3
    store = _study(root)
    key = f"res/s/trials/{store.trial('t2').parts('trials')[0][2].rsplit('trials/', 1)[1]}"
    key = f"res/s/trials/{key.rsplit('trials/', 1)[1]}"
    good = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=good[: len(good) // 2])   # corrupt at rest
    with pytest.raises(Exception):
        compaction.compact(store, grace_s=0)
    assert _compacts(store) == []
    client.put_object(Bucket=bucket, Key=key, Body=good)
    assert compaction.compact(store, grace_s=0) == TRIALS
    _exactly_once(store)
    _duckdb_once(store, tmp_path)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_compactions_at_once_publish_one_generation_and_delete_nothing_twice(
        where, tmp_path, request):
    root = str(tmp_path / "res") if where == "local" else request.getfixturevalue("s3")[0]
    store = _study(root)
    first, second = compaction.plan(store), compaction.plan(store)   # both planned, then race
    assert compaction.apply(store, first, grace_s=0) == TRIALS
    with pytest.raises(CompactionLost, match="by another compaction"):
        compaction.apply(store, second, grace_s=0)
    assert _compacts(store) == [1]
    _exactly_once(store)


def test_compact_beside_a_running_driver_is_refused_and_changes_nothing(tmp_path, capsys):
    from study.cli import main

    store = _study(str(tmp_path))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    with Lease(store, log=lambda s: None):
        assert main(["compact", str(tmp_path / "s"), "--grace", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a driver holds the study" in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == before
    assert main(["compact", str(tmp_path / "s"), "--grace", "0"]) == 0    # released: it runs
    _exactly_once(store)


def test_check_finds_and_repairs_a_short_compact_file_of_an_earlier_version(tmp_path, capsys):
    """What a failed compaction of main d2190cc left on S3: a published generation whose
    footer lists every trial but that holds none of their rows."""
    import json

    import pyarrow.parquet as pq

    from resultstore.format import FORMAT_KEY, SCHEMAS
    from study.cli import main

    store = _study(str(tmp_path))
    info = {"format_version": 5, "gen": 1, "trials": [f"t{i}" for i in range(TRIALS)]}
    schema = SCHEMAS["trials"].with_metadata({"vaestudy": json.dumps(info), FORMAT_KEY: b"5"})
    pq.write_table(schema.empty_table(), store.path("trials", "compact-000001.parquet"))
    assert load.trials(str(tmp_path), "s", last=False).collect().height == 0   # hidden
    assert main(["check", str(tmp_path / "s")]) == 1
    assert "6 hidden" in capsys.readouterr().out
    assert main(["check", str(tmp_path / "s"), "--repair"]) == 0
    _exactly_once(store)
    assert main(["check", str(tmp_path / "s")]) == 0
    assert "every row readable exactly once" in capsys.readouterr().out


def _trained(root: str, epochs: int = 3):
    """A tiny real trial stopped after epoch 2 (checkpoints every epoch)."""
    import conftest
    from trainables.config import TrialConfig
    from trainables.train import run_trial

    cfg = TrialConfig.from_dict(conftest.tiny(**{"train.epochs": epochs,
                                                 "checkpoint.keep": 3}))
    store = ResultStore(root, "ck")
    with pytest.raises(conftest.Interrupt):
        run_trial(cfg, store, report=conftest.stop_at(2), log=lambda s: None)
    return cfg, store


def test_a_transient_checkpoint_read_error_is_retried_and_a_lasting_one_fails_the_attempt(s3):
    from trainables.train import run_trial

    root, _, _, proxy = s3
    cfg, store = _trained(root)
    said = []
    proxy.fail("GET", r"/checkpoints/.*epoch-000002", times=1)
    run_trial(cfg, ResultStore(root, "ck"), log=said.append)   # retried: resumes after epoch 2
    assert any("resuming after epoch 2" in s for s in said), said
    cfg2, store2 = _trained(root.replace("/res?", "/res2?"))
    proxy.fail("GET", r"/checkpoints/.*epoch-000002", times=None)
    with pytest.raises(StorageIOError):                         # not silently from scratch
        run_trial(cfg2, ResultStore(root.replace("/res?", "/res2?"), "ck"), log=lambda s: None)
    assert store2.status(cfg2.trial_id())["state"] == "running"
    assert [e for e, _ in store2.trial(cfg2.trial_id()).checkpoints()] == [1, 2]


def test_a_corrupt_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    from trainables.train import run_trial

    cfg, store = _trained(str(tmp_path))
    (e, path), = [c for c in store.trial(cfg.trial_id()).checkpoints() if c[0] == 2]
    Path(path).write_bytes(Path(path).read_bytes()[:100])       # truncated on disk
    said = []
    run_trial(cfg, ResultStore(str(tmp_path), "ck"), log=said.append)
    assert any("resuming after epoch 1" in s for s in said), said
    assert "skipping checkpoint" in capsys.readouterr().out
    rows = load.trials(str(tmp_path), "ck", last=False).collect()
    assert sorted(rows["epoch"]) == [1, 2, 3]
