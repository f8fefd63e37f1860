"""A study that grows: `vaestudy extend` trains only the new trials, refuses a change that
would alter an existing one, and `reuse:` copies finished trials of another study in,
each row readable exactly once. Real Ray, real training, tiny configs."""
import json
import shutil

import polars as pl
import pytest
import yaml

from resultstore import compact as compaction
from resultstore.check import check
from resultstore.store import ResultStore
from study.cli import main
from study.status import status_text
from support.procs import S3_ENV, Procs, S3, s3, s3_server  # noqa: F401

pytestmark = pytest.mark.slow

SPEC = {"name": "tiny", "seeds": [0], "dataset": {"name": "intrinsic", "n": 200, "factors": 2},
        "model": {"latent_dim": 3}, "noise": {"sigma2": [0.01, 0.1]},
        "train": {"epochs": 2, "threads": 1, "device": "cpu"}, "eval": {"traversals": False},
        "checkpoint": {"every": 1}, "resources": {"cpu": 1}, "max_concurrent": 2}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-trial study, run as a user would; Ray is down again afterwards."""
    import ray
    tmp = tmp_path_factory.mktemp("finished")
    spec = tmp / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    assert main(["run", str(spec), "--out", str(tmp / "res"), "--no-report"]) == 0
    ray.shutdown()
    yield tmp / "res"
    ray.shutdown()


def _copy(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "res")
    return tmp_path / "res"


def _files(root) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def _status_bytes(root, study) -> dict:
    return {p.stem: p.read_bytes() for p in (root / study / "status").glob("*.json")}


@pytest.mark.parametrize("argv,needle", [
    (["--set", "train.epochs=3"], "train.epochs: 2 is gone"),
    (["--set", "dataset.n=300"], "dataset.n: 200 is gone"),
    (["--set", "dataset.name=mnist"], "dataset.name"),
    (["--set", "seeds=[1, 2]"], "seeds: 0 is gone"),
    (["--set", "noise.sigma2=[0.01, 0.03]"], "noise.sigma2: 0.1 is gone"),
    (["--set", "model.latent_dim=[4]"], "model.latent_dim: 3 is gone"),
    ([], "adds no trial"),
    (["--set", "seeds=[0, 1]", "--reuse", "tiny"], "reuse: 'tiny' is this study"),
    (["--set", "seeds=[0, 1]", "--reuse", "nosuch"], "reuse: no study 'nosuch'"),
    (["--set", "seeds=[0, 1]", "--set", "name=other"], "name: the spec names study 'other'"),
    (["--set", "seeds=[0, 1]", "--set", "pack=0"], "pack: got 0"),
    (["--set", "seeds=[0, 0]"], "seeds: got [0, 0]"),
])
def test_a_change_that_alters_the_study_is_refused_naming_the_key(capsys, finished, argv,
                                                                  needle):
    import ray
    before = _files(finished)
    assert main(["extend", str(finished / "tiny"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vaestudy: error: ") and needle in err, err
    assert _files(finished) == before, "something was written"
    assert not ray.is_initialized()


def test_kept_trials_written_by_a_newer_vaestudy_are_refused(capsys, finished, tmp_path):
    """Ids hash the config, not the code: the rows an extension keeps are read first, and a
    results format this code cannot read stops it in one line, nothing written."""
    import pyarrow.parquet as pq
    from resultstore.format import FORMAT_KEY
    root = _copy(finished, tmp_path)
    [path] = (root / "tiny" / "trials").glob("compact-*.parquet")
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, FORMAT_KEY: b"99"}), path)
    before = _files(root)
    assert main(["extend", str(root / "tiny"), "--set", "seeds=[0, 1]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "results format '99'" in err, err
    assert _files(root) == before


def test_extending_a_study_that_does_not_exist_is_refused(capsys, tmp_path):
    assert main(["extend", str(tmp_path / "nope")]) == 2
    assert "no study.json" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_extend_trains_only_the_new_trials(finished, tmp_path, capsys):
    from analysis import load
    root = _copy(finished, tmp_path)
    kept = _status_bytes(root, "tiny")
    old = json.loads((root / "tiny" / "study.json").read_text())
    assert main(["extend", str(root / "tiny"), "--set", "seeds=[0, 1]", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "plan: 2 trials finished before, 2 to run" in out
    assert "extend: 2 trials kept" in out
    now = _status_bytes(root, "tiny")
    assert all(now[t] == kept[t] for t in kept), "a kept trial was touched"
    new = {t: json.loads(b) for t, b in now.items() if t not in kept}
    assert len(new) == 2 and all(s["state"] == "completed" and s["attempts"] == 1
                                 for s in new.values())
    meta = json.loads((root / "tiny" / "study.json").read_text())
    assert [t["id"] for t in meta["trials"][:2]] == [t["id"] for t in old["trials"]]
    assert len(meta["trials"]) == 4 and meta["finished"]
    (ext,) = meta["extensions"]
    assert ext["spec_before"]["seeds"] == [0] and ext["spec_after"]["seeds"] == [0, 1]
    assert ext["trials_before"] == 2 and ext["trials_added"] == 2 and ext["command"] and ext["at"]
    assert sum(ext["kept_code_versions"].values()) == 2 and ext["code_version"]
    rows = load.trials(str(root), "tiny", last=False).collect()
    assert rows.height == 4 * 2 and rows.n_unique(["trial_id", "epoch"]) == rows.height
    assert sorted(rows["seed"].unique()) == [0, 1]
    text = status_text(ResultStore(str(root), "tiny"))
    assert "= 4 trials" in text and "completed: 4" in text and "extended 1 time" in text


def test_reuse_copies_each_finished_trial_in_exactly_once(finished, tmp_path, capsys):
    from analysis import load
    root = _copy(finished, tmp_path)
    spec = tmp_path / "other.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "name": "other",
                                    "noise": {"sigma2": [0.01, 0.1, 0.03]}}))
    assert main(["run", str(spec), "--out", str(root), "--reuse", "tiny", "--no-report"]) == 0
    out = capsys.readouterr().out
    assert "plan: 0 trials finished before, 2 to copy from other studies, 1 to run" in out
    src, dst = ResultStore(str(root), "tiny"), ResultStore(str(root), "other")
    states = {s["trial_id"]: s for s in dst.all_status()}
    copied = sorted(t for t, s in states.items() if s.get("reused_from") == "tiny")
    origin = {s["trial_id"]: s for s in src.all_status()}
    assert copied == sorted(origin) and len(states) == 3
    assert all(states[t]["attempts"] == origin[t]["attempts"] for t in copied), "retrained"
    for t in copied:                                       # the final weights, as they were
        assert (root / "other" / "checkpoints" / t / "final.pt").read_bytes() == \
            (root / "tiny" / "checkpoints" / t / "final.pt").read_bytes()
    _each_row_once(load, root, copied, src, dst)
    assert main(["resume", str(root / "other"), "--no-report"]) == 0   # nothing copied twice
    assert "reuse: copied" not in capsys.readouterr().out
    _each_row_once(load, root, copied, src, dst)


def _each_row_once(load, root, copied, src, dst):
    load.store.cache_clear()
    for table in ("trials", "factors", "codes"):
        got = load.scan(str(root), "other", table).collect()
        key = load.KEYS[table]
        assert got.n_unique(key) == got.height and set(got["study"]) == {"other"}
        mine = got.filter(pl.col("trial_id").is_in(copied)).drop("study").sort(key)
        theirs = load.scan(str(root), "tiny", table).collect().drop("study").sort(key)
        assert mine.equals(theirs), table                  # the same rows, each once
        compacts, parts = compaction.listing(dst, table)   # compaction took the copies in
        assert compacts and not parts
        assert set(copied) <= compaction.covered(dst, compacts[-1][1])
    assert check(dst, log=lambda line: None) == {}


def test_an_extended_packed_study_packs_the_new_trials_apart(tmp_path):
    import ray
    from study import extend, runner
    from study.spec import parse
    try:
        runner.run(parse({**SPEC, "pack": 2}), str(tmp_path))
        store = ResultStore(str(tmp_path), "tiny")
        [(old_pid, old_members)] = store.read_json(store.path("study.json"))["packs"].items()
        before = {s["trial_id"]: s for s in store.all_status()}
        grow = extend.prepare(f"{tmp_path}/tiny", None, {"seeds": [0, 1]}, None)
        out = runner.run(grow.spec, grow.root, resume=True, grow=grow)
        assert out.counts["completed"] == 4
        packs = store.read_json(store.path("study.json"))["packs"]
        assert len(packs) == 2 and packs[old_pid] == old_members      # the old pack kept
        [new_pid] = set(packs) - {old_pid}
        after = {s["trial_id"]: s for s in store.all_status()}
        assert sorted(packs[new_pid]) == sorted(set(after) - set(before))
        assert all(after[t] == before[t] for t in old_members), "an old member was retrained"
        assert all(after[t]["pack"] == new_pid and after[t]["attempts"] == 1
                   for t in packs[new_pid])
    finally:
        ray.shutdown()


def test_a_search_extended_by_num_samples_continues_its_optuna_study(tmp_path, capsys):
    import optuna
    import ray
    raw = {**{k: v for k, v in SPEC.items() if k not in ("seeds", "noise")},
           "name": "search", "num_samples": 2, "max_concurrent": 2,
           "search": {"optuna": {"sampler": "random", "seed": 0}},
           "noise": {"sigma2": {"loguniform": [0.001, 0.3]}}}
    spec = tmp_path / "search.yaml"
    spec.write_text(yaml.safe_dump(raw))
    root = tmp_path / "res"
    try:
        assert main(["run", str(spec), "--out", str(root), "--no-report"]) == 0
        kept = _status_bytes(root, "search")
        for argv, needle in ((["--set", "num_samples=2"], "num_samples: got 2"),
                             (["--set", "search.optuna.seed=1", "--set", "num_samples=3"],
                              "search.optuna.seed: a search's extension may only raise")):
            files = _files(root)
            assert main(["extend", str(root / "search"), *argv]) == 2
            assert needle in capsys.readouterr().err and _files(root) == files
        assert main(["extend", str(root / "search"), "--set", "num_samples=3",
                     "--no-report"]) == 0
    finally:
        ray.shutdown()
    assert "2 of 3 trials done" in capsys.readouterr().out
    now = _status_bytes(root, "search")
    assert len(now) == 3 and all(now[t] == kept[t] for t in kept)
    study = optuna.load_study(study_name="search",
                              storage=f"sqlite:///{root}/search/optuna.db")
    assert len(study.trials) == 3
    meta = json.loads((root / "search" / "study.json").read_text())
    assert len(meta["trials"]) == 3 and meta["extensions"][0]["trials_added"] == 1


def test_reuse_on_s3_copies_in_without_training_or_ray(s3, capsys):
    """Every trial of the new study finished in the other: copied, compacted, nothing trains
    (Ray never starts), each row readable once, on a real S3 server (moto)."""
    import ray
    from analysis import load
    from study import runner
    from study.spec import parse, trial_configs
    from trainables.train import run_trial
    ray.shutdown()                                     # whatever an earlier test left up
    uri = s3.uri(s3.bucket())
    spec = parse({**SPEC, "name": "other", "reuse": ["pilot"]})
    pilot = ResultStore(uri, "pilot")
    for cfg in trial_configs(spec):                    # the pilot: `vaestudy train` trials
        run_trial(cfg, pilot, log=lambda _: None)
    out = runner.run(spec, uri)
    assert out.counts["completed"] == 2 and not ray.is_initialized()
    assert "2 to copy from other studies, 0 to run" in capsys.readouterr().out
    dst = ResultStore(uri, "other")
    assert {s.get("reused_from") for s in dst.all_status()} == {"pilot"}
    load.store.cache_clear()
    for table in ("trials", "factors", "codes"):
        got = load.scan(uri, "other", table).collect()
        assert got.height and got.n_unique(load.KEYS[table]) == got.height
        assert got.drop("study").sort(load.KEYS[table]).equals(
            load.scan(uri, "pilot", table).collect().drop("study").sort(load.KEYS[table]))
        compacts, parts = compaction.listing(dst, table)
        assert compacts and not parts
    assert check(dst, log=lambda line: None) == {}


def test_the_report_flags_trials_of_mixed_code_versions():
    from analysis import versions
    from analysis.figures import Tables
    last = pl.DataFrame({"trial_id": ["a", "b", "c"], "code_version": ["1+gx", "1+gx", "2+gy"],
                         "written_at": [1, 2, 3]}).with_columns(
        pl.col("written_at").cast(pl.Datetime("ms", "UTC")))
    mixed = versions.section(Tables({"code_versions": versions.code_versions(last)}))
    assert mixed[0] == ("h", 2, "Code versions: MIXED") and mixed[-1][1].height == 2
    one = versions.section(Tables({"code_versions": versions.code_versions(last.head(2))}))
    assert one == [("h", 2, "Code version"),
                   ("p", "All 2 trials were computed by vaestudy 1+gx.")]


def test_a_finished_copy_replaces_a_trials_own_unfinished_attempt(tmp_path, capsys):
    """A trial that started here and was killed, then found finished in another study: its
    own rows and checkpoints go, the copy's take their place, each row once (no Ray)."""
    from analysis import load
    from conftest import Interrupt, stop_at
    from study import runner
    from study.spec import parse, trial_configs
    from trainables.train import run_trial
    root = str(tmp_path)
    spec = parse({**SPEC, "name": "other", "reuse": ["pilot"]})
    cfg = trial_configs(spec)[0]
    for c in trial_configs(spec):
        run_trial(c, ResultStore(root, "pilot"), log=lambda _: None)
    with pytest.raises(Interrupt):                            # killed after its first epoch
        run_trial(cfg, ResultStore(root, "other"), report=stop_at(1), log=lambda _: None)
    own = tmp_path / "other" / "checkpoints" / cfg.trial_id()
    assert [p.name for p in own.glob("epoch-*.pt")] and (tmp_path / "other" / "trials").exists()
    assert runner.run(spec, root).counts["completed"] == 2
    assert "2 to copy from other studies, 0 to run" in capsys.readouterr().out
    ckpts = sorted(p.name for p in (tmp_path / "other" / "checkpoints").rglob("*.pt"))
    assert ckpts == ["final.pt", "final.pt"]                  # its own epoch checkpoints gone
    load.store.cache_clear()
    rows = load.trials(root, "other", last=False).collect()
    assert rows.height == 2 * 2 and rows.n_unique(["trial_id", "epoch"]) == rows.height
    assert set(rows["state"]) == {"completed"}
    assert check(ResultStore(root, "other"), log=lambda line: None) == {}
