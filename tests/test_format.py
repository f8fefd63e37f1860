"""Stable trial ids and the versioned results format.

tests/data/studies/vN/tiny is a study of two one-epoch trials as the code of
results format N wrote it (checkpoints left out): every later version must
resume it without training, show it, and report on it.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from study.runner import recorded
from study.spec import parse, trial_configs
from trainables.config import TrialConfig
from resultstore.format import FORMAT_KEY, FORMAT_VERSION
from resultstore.store import ResultStore
from resultstore.uri import StoreError

DATA = Path(__file__).parent / "data" / "studies"
VERSIONS = sorted(int(p.name[1:]) for p in DATA.glob("v*"))


def test_every_format_up_to_the_current_one_has_a_fixture_study():
    assert VERSIONS == list(range(1, FORMAT_VERSION + 1))


# ---- ids --------------------------------------------------------------------------
PINNED = {                        # never change these by accident: every stored study uses them
    "t44136fa355b": {},
    "t0091face810": {"noise.kind": "learned", "noise.beta": 10},
    "t61a951ed2b2": {"dataset.name": "mnist", "dataset.path": "data/mnist", "noise.sigma2": 0.11,
                     "train.epochs": 200, "train.seed": 3},
}


@pytest.mark.parametrize("expected", sorted(PINNED))
def test_trial_ids_are_pinned(expected):
    assert TrialConfig.from_dict(PINNED[expected]).trial_id() == expected


def test_values_equal_to_their_defaults_do_not_enter_the_id():
    plain = TrialConfig.from_dict({"noise.beta": 2})
    explicit = TrialConfig.from_dict({"noise.beta": 2.0, "noise.k": 2, "train.lr": 0.001,
                                      "dataset.split": [0.6, 0.2, 0.2], "train.threads": 3,
                                      "train.fault_epoch_delay": 0.5})
    assert explicit.canonical() == plain.canonical() == {"noise": {"beta": 2.0}}
    assert explicit.trial_id() == plain.trial_id()
    assert TrialConfig.from_dict({"noise.beta": 3}).trial_id() != plain.trial_id()


def test_format1_ids_are_still_derived_for_old_studies():
    meta = json.loads((DATA / "v1" / "tiny" / "study.json").read_text())
    configs = trial_configs(parse(meta["spec"]))
    assert sorted(c.legacy_trial_id() for c in configs) == sorted(meta["trials"])
    assert {c.trial_id() for c in configs}.isdisjoint(meta["trials"])   # the formula did change
    assert [tid for tid, _ in recorded(meta, configs)] == meta["trials"]


def test_recorded_ids_win_over_recomputed_ones():
    meta = json.loads((DATA / f"v{FORMAT_VERSION}" / "tiny" / "study.json").read_text())
    meta["trials"][0]["id"] = "tsomeoldname"           # as an earlier version might have named it
    trials = recorded(meta, trial_configs(parse(meta["spec"])))
    assert trials[0][0] == "tsomeoldname"
    assert trials[0][1] == TrialConfig.from_dict(meta["trials"][0]["config"])   # keys added since


# ---- the format version ---------------------------------------------------------------
def test_parquet_files_carry_the_format_version(tmp_path):
    store = ResultStore(str(tmp_path), "s")
    store.trial("t1").append({"factors": [{"study": "s", "trial_id": "t1", "epoch": 1,
                                           "factor": 0, "mi": 1.0, "post_var": 0.1,
                                           "qstar_var": 1.0, "used": True}]}, 1, 1)
    (path,) = Path(store.path("factors", "t1")).glob("*.parquet")
    assert pq.read_schema(path).metadata[FORMAT_KEY] == str(FORMAT_VERSION).encode()
    assert store.trial("t1").read("factors").num_rows == 1


def test_a_newer_parquet_file_is_refused_with_one_clear_error(tmp_path):
    store = ResultStore(str(tmp_path), "s")
    t = pa.table({"epoch": [1]}).replace_schema_metadata({FORMAT_KEY: b"99"})
    Path(store.path("trials", "t1")).mkdir(parents=True)
    pq.write_table(t, store.path("trials", "t1", "part-000001-000001.parquet"))
    with pytest.raises(StoreError, match=r"part-000001-000001.parquet: results format '99' .*1 to"):
        store.trial("t1").read("trials")


def test_a_newer_study_is_refused_by_status_with_exit_2(tmp_path):
    study = tmp_path / "tiny"
    shutil.copytree(DATA / f"v{FORMAT_VERSION}" / "tiny", study)
    meta = json.loads((study / "study.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (study / "study.json").write_text(json.dumps(meta))
    for cmd in ("status", "report", "resume"):
        r = subprocess.run([sys.executable, "-m", "study.cli", cmd, str(study)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (cmd, r.stderr)
        assert r.stderr.count("\n") == 1 and "study.json: results format" in r.stderr
        assert "upgrade" in r.stderr


# ---- studies written by earlier versions ----------------------------------------------
def _snapshot(study: Path) -> dict:
    return {p.relative_to(study): p.read_bytes() for p in sorted(study.rglob("*"))
            if p.is_file() and p.parts[len(study.parts)] in ("trials", "factors", "codes", "status")}


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_an_old_study_resumes_without_training_shows_and_reports(tmp_path, version):
    study = tmp_path / "tiny"
    shutil.copytree(DATA / f"v{version}" / "tiny", study)
    before = _snapshot(study)
    cli = [sys.executable, "-m", "study.cli"]
    r = subprocess.run([*cli, "resume", str(study), "--no-report"], capture_output=True,
                       text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _snapshot(study) == before                      # no row, checkpoint or state changed
    assert not (study / "checkpoints").exists()            # so nothing was trained
    meta = json.loads((study / "study.json").read_text())
    assert meta["format_version"] == FORMAT_VERSION
    assert sorted(t["id"] for t in meta["trials"]) == sorted(p.stem for p in (study / "status").iterdir())
    r = subprocess.run([*cli, "status", str(study)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "completed: 2" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([*cli, "report", str(study), "--no-higgins"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (study / "report.html").stat().st_size > 1000


def test_fixture_spec_is_the_one_the_fixtures_were_made_from():
    spec = yaml.safe_load((DATA / "tiny-spec.yaml").read_text())
    for v in VERSIONS:
        meta = json.loads((DATA / f"v{v}" / "tiny" / "study.json").read_text())
        assert meta["spec"] == {**spec, "storage": "res"}
