"""Where a search's Optuna study lives: a real PostgreSQL on loopback, the journal mirror,
optuna-dashboard reading the study over HTTP, and the one-line refusals."""
import json
import signal
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import polars as pl
import pytest
import yaml

from study import optuna_storage
from study.cli import main
from support.procs import cli, free_port, postgres, procs, wait_port  # noqa: F401
from resultstore.store import ResultStore

SEARCH = {"name": "pg", "num_samples": 4, "max_concurrent": 2,
          "dataset": {"name": "intrinsic", "n": 600, "factors": 2}, "model": {"latent_dim": 3},
          "noise": {"sigma2": {"loguniform": [0.005, 0.2]}}, "train": {"epochs": 6},
          "eval": {"every": 1, "traversals": False}, "checkpoint": {"every": 2},
          "resources": {"cpu": 1}}


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_search_in_postgres_killed_resumed_and_read_by_optuna_dashboard(postgres, procs):
    url = postgres.url.replace("postgresql+psycopg://", "postgresql://")   # the plain form
    spec = procs.tmp / "s.yaml"
    spec.write_text(yaml.safe_dump({**SEARCH, "search": {"optuna": {
        "sampler": "random", "seed": 2, "storage": url}}}))
    root = procs.tmp / "res"
    driver = procs.start(cli("run", str(spec), "--out", str(root), "--no-report"), "run")
    deadline = time.time() + 300
    while not list((root / "pg" / "checkpoints").glob("*/epoch-000004.pt")):
        assert driver.poll() is None and time.time() < deadline, procs.log("run")[-2000:]
        time.sleep(0.3)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    procs.kill(driver)
    rc, out = procs.run(cli("resume", str(root / "pg"), "--no-report"), "resume")
    assert rc == 0, out[-3000:]

    study = optuna.load_study(study_name="pg", storage=postgres.url)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 == len(study.get_trials())
    rows = pl.read_parquet(ResultStore(str(root), "pg").glob("trials"))
    assert rows.n_unique(["trial_id", "epoch"]) == rows.height == 4 * 6
    last = rows.sort("epoch").group_by("trial_id").last()
    for t in done:                                   # Optuna's values are the Parquet rows'
        r = last.filter(pl.col("trial_id") == t.user_attrs["trial_id"]).row(0, named=True)
        assert t.values == pytest.approx([r["evlb"], r["kl_qz_pz"]])

    port = free_port()
    procs.start([str(Path(sys.executable).parent / "optuna-dashboard"), postgres.url,
                 "--host", "127.0.0.1", "--port", str(port)], "dashboard")
    wait_port(port)
    base = f"http://127.0.0.1:{port}/api/studies"
    sid = next(s["study_id"] for s in _get(base)["study_summaries"] if s["study_name"] == "pg")
    detail = _get(f"{base}/{sid}")
    assert detail["objective_names"] == ["evlb", "kl_qz_pz"]
    for t in detail["trials"]:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        assert {"trial_id", "config", "epoch", "n_used_factors"} <= set(attrs), attrs
        assert attrs["epoch"] == "6"


def test_unreachable_postgres_is_one_line_before_anything_is_written(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    url = f"postgresql://nobody@127.0.0.1:{free_port()}/db"
    spec.write_text(yaml.safe_dump({**SEARCH, "search": {"optuna": {"storage": url}}}))
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search.optuna.storage: cannot connect to" in err, err
    assert not (tmp_path / "out").exists()


def test_postgres_url_without_a_driver_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)      # neither driver importable
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    monkeypatch.setenv("VAESTUDY_TEST_PGPASS", "hunter2")
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({**SEARCH, "search": {"optuna": {
        "storage": "postgresql://u:${VAESTUDY_TEST_PGPASS}@127.0.0.1:1/db"}}}))
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'vaestudy[postgres]'" in err, err
    assert "hunter2" not in err and not (tmp_path / "out").exists()


def _secret_anywhere(root: Path, secret: bytes) -> list[str]:
    return [str(f) for f in root.rglob("*") if f.is_file() and secret in f.read_bytes()]


@pytest.mark.slow
def test_a_search_takes_its_postgres_password_from_the_environment_never_records_it(
        postgres, tmp_path, monkeypatch, capsys):
    """The role needs its password (scram-sha-256); the spec names it ${VAR}. A literal
    password, an unset or a wrong variable are each one line, exit 2, nothing written."""
    from urllib.parse import quote

    pw = postgres.PASSWORD
    base = f"postgresql://{postgres.USER}:{{}}@127.0.0.1:{postgres.port}/{postgres.USER}"
    spec = tmp_path / "s.yaml"
    out, tune = tmp_path / "out", tmp_path / "tune"
    monkeypatch.setenv("VAESTUDY_TUNE_DIR", str(tune))

    def run(storage):
        spec.write_text(yaml.safe_dump({**SEARCH, "num_samples": 2, "train": {"epochs": 2},
                                        "search": {"optuna": {"storage": storage}}}))
        rc = main(["run", str(spec), "--out", str(out), "--no-report"])
        return rc, capsys.readouterr().err

    rc, err = run(base.format(quote(pw, safe="")))
    assert rc == 2 and err.count("\n") == 1, err
    assert "holds a password, which study.json would record" in err and pw not in err
    rc, err = run(base.format("${VAESTUDY_TEST_PGPASS}"))
    assert rc == 2 and "${VAESTUDY_TEST_PGPASS} is not set" in err and err.count("\n") == 1
    monkeypatch.setenv("VAESTUDY_TEST_PGPASS", "not-" + pw)
    rc, err = run(base.format("${VAESTUDY_TEST_PGPASS}"))
    assert rc == 2 and "cannot connect to" in err and "password authentication failed" in err
    assert "not-" + pw not in err and not out.exists()

    monkeypatch.setenv("VAESTUDY_TEST_PGPASS", pw)          # '@', ':', '/' URL-encoded
    rc, err = run(base.format("${VAESTUDY_TEST_PGPASS}"))
    assert rc == 0, err[-3000:]
    study = optuna.load_study(study_name="pg", storage=base.format(quote(pw, safe="")))
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials()) == 2
    meta = json.loads((out / "pg" / "study.json").read_text())
    assert meta["spec"]["search"]["optuna"]["storage"] == base.format("${VAESTUDY_TEST_PGPASS}")
    assert _secret_anywhere(out, pw.encode()) == [] and _secret_anywhere(tune, pw.encode()) == []
    assert main(["resume", str(out / "pg"), "--no-report"]) == 0   # the recorded ${VAR} again


def test_journal_mirror_uploads_each_write_once_and_restores_the_study(tmp_path):
    """Pieces hold only the bytes added since the last sync: their total is the journal's
    size (linear in the trials, not quadratic), and a new folder restores the same study."""
    store = ResultStore(str(tmp_path / "res"), "j")
    mirror = optuna_storage.JournalMirror(store, tmp_path / "driver-a")
    mirror.restore()
    study = optuna.create_study(storage=mirror.storage(), study_name="j",
                                directions=["maximize", "minimize"])
    mirror.sync()
    for i in range(12):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        mirror.sync()
        study.tell(trial, [trial.params["x"], i])
        mirror.sync()
    sizes = [len(store.read_bytes(p)) for _, p in mirror.pieces()]
    assert len(sizes) == 1 + 2 * 12
    assert sum(sizes) == mirror.path.stat().st_size
    assert max(sizes[5:]) < 3 * min(sizes[5:]) + 200          # no piece grows with the count

    again = optuna_storage.JournalMirror(store, tmp_path / "driver-b")
    again.restore()
    back = optuna.load_study(study_name="j", storage=again.storage())
    assert [t.values for t in back.get_trials()] == [t.values for t in study.get_trials()]


@pytest.mark.slow
def test_optuna_dashboard_reads_the_sqlite_study_while_the_search_writes_it(procs):
    """The README's dashboard on the live SQLite study: both sides use the URL with the lock
    timeout, so neither a dashboard read nor a search write fails with 'database is locked'."""
    spec = procs.tmp / "s.yaml"
    spec.write_text(yaml.safe_dump({**SEARCH, "name": "live", "num_samples": 6,
                                    "train": {"epochs": 4},
                                    "search": {"optuna": {"sampler": "random", "seed": 3}}}))
    root = procs.tmp / "res"
    driver = procs.start(cli("run", str(spec), "--out", str(root), "--no-report"), "run")
    store = ResultStore(str(root), "live")
    deadline = time.time() + 300
    while not (root / "live" / "optuna.db").exists():
        assert driver.poll() is None and time.time() < deadline, procs.log("run")[-2000:]
        time.sleep(0.2)
    port = free_port()
    procs.start([str(Path(sys.executable).parent / "optuna-dashboard"),
                 optuna_storage.sqlite_url(store), "--host", "127.0.0.1", "--port", str(port)],
                "dashboard")
    wait_port(port)
    base = f"http://127.0.0.1:{port}/api/studies"
    reads, seen = 0, set()
    while driver.poll() is None:                       # read as fast as it answers
        assert time.time() < deadline, procs.log("run")[-2000:]
        for s in _get(base)["study_summaries"]:
            seen |= {t["number"] for t in _get(f"{base}/{s['study_id']}")["trials"]}
            reads += 1
        time.sleep(0.02)
    assert driver.returncode == 0, procs.log("run")[-3000:]
    assert reads >= 3 and len(seen) >= 1, (reads, seen)
    for name in ("run", "dashboard"):
        assert "database is locked" not in procs.log(name), procs.log(name)[-3000:]
    done = optuna.load_study(study_name="live", storage=optuna_storage.sqlite_url(store))
    assert len(done.get_trials()) == 6
