"""`pack:` in a grid spec: partition, refusals, and a packed study on a real local Ray."""
import pytest

from study.inputs import UsageError
from study.packing import partition
from study.spec import parse, trial_configs

BASE = {"name": "packed", "dataset": {"name": "intrinsic", "n": 300, "factors": 2},
        "model": {"latent_dim": 3}, "train": {"epochs": 2, "device": "cpu"},
        "eval": {"traversals": False}, "seeds": [0, 1]}


def test_the_grid_is_cut_into_packs_of_members_that_share_their_shape():
    spec = parse({**BASE, "pack": 3, "noise": {"kind": ["specified", "learned"],
                                               "sigma2": [0.01, 0.1, 0.2]}})
    packs = partition(_trials(spec), spec.pack)
    assert sorted(len(p) for p in packs) == [3, 3, 3, 3]          # 2 kinds x 6, at most 3
    for p in packs:
        assert len({c.noise.kind for _, c in p}) == 1
    assert sorted(tid for p in packs for tid, _ in p) == sorted(tid for tid, _ in _trials(spec))
    auto = partition(_trials(spec), "auto")
    assert sorted(len(p) for p in auto) == [6, 6]
    five = parse({**BASE, "pack": 4, "noise": {"sigma2": [0.01, 0.1, 0.2, 0.3, 0.4]}})
    assert sorted(len(p) for p in partition(_trials(five), 4)) == [3, 3, 4]  # balanced


def _trials(spec):
    return [(c.trial_id(), c) for c in trial_configs(spec)]


@pytest.mark.parametrize("extra,msg", [
    ({"pack": 0}, "pack: got 0; allowed: an integer >= 1"),
    ({"pack": "many"}, "pack: got 'many'"),
    ({"pack": 4, "search": {"optuna": {}}, "num_samples": 4,
      "noise": {"beta": {"loguniform": [0.1, 2]}}}, "pack: a search runs one trial per"),
])
def test_bad_pack_values_are_refused_naming_the_key(extra, msg):
    with pytest.raises(UsageError, match=msg):
        parse({**BASE, **extra})


@pytest.mark.slow
def test_a_packed_study_stores_ordinary_trials(tmp_path):
    pytest.importorskip("ray")
    import polars as pl
    import ray

    from study import runner
    from study.status import status_text
    from resultstore.store import ResultStore

    raw = {**BASE, "pack": "auto", "noise": {"sigma2": [0.01, 0.1]}, "resources": {"cpu": 2}}
    try:
        out = runner.run(parse(raw), str(tmp_path))
        assert out.counts["completed"] == 4
        store = ResultStore(str(tmp_path), "packed")
        meta = store.read_json(store.path("study.json"))
        [(pid, members)] = meta["packs"].items()
        assert sorted(members) == sorted(t["id"] for t in meta["trials"]) and pid.startswith("p")
        trials = pl.read_parquet(store.glob("trials"))
        assert trials.height == 8 and trials.n_unique(["trial_id", "epoch"]) == 8
        assert all(s["pack"] == pid and s["attempts"] == 1 for s in store.all_status())
        assert f"pack {pid}: 4 members (completed 4)" in status_text(store)
        runner.run(parse(raw), str(tmp_path), resume=True)           # finished: nothing rerun
        assert all(s["attempts"] == 1 for s in store.all_status())
        assert pl.read_parquet(store.glob("trials")).sort("trial_id", "epoch").equals(
            trials.sort("trial_id", "epoch"))
    finally:
        ray.shutdown()


def test_a_resumed_study_keeps_its_packs_and_their_names():
    """Half the grid finished: the packs left to run are the first run's packs (same
    names), each with only its unfinished members; a pack with none is not run."""
    from study.runner import _grid_space
    from trainables.pack_run import pack_id

    spec = parse({**BASE, "pack": 4, "noise": {"sigma2": [0.01, 0.1, 0.2, 0.3, 0.4]}})
    trials = _trials(spec)                                  # 10 trials: packs of 3, 3, 4
    first = {pack_id([t for t, _ in p]): [t for t, _ in p] for p in partition(trials, 4)}
    finished = {tid for p in first.values() for tid in p[:2]} | set(list(first.values())[0])
    todo = {tid: c.to_dict() for tid, c in trials if tid not in finished}
    _, packs = _grid_space(spec, todo, lambda s: None, trials)
    assert set(packs["packs"]) < set(first)                  # the first pack has nothing left
    for pid, members in packs["packs"].items():
        assert members == [t for t in first[pid] if t in todo]


def test_a_grown_study_resumes_its_recorded_packs_and_packs_only_the_rest_anew():
    """After an extension (or a round of adaptive seeds) the grid differs from the one the
    packs were cut from: a resume keeps each recorded pack's unfinished members under its
    name, and packs only trials no run packed before (the gap issue 24 item 1 left)."""
    from study.runner import _grid_space

    spec = parse({**BASE, "pack": 4, "noise": {"sigma2": [0.01, 0.1, 0.2, 0.3, 0.4]}})
    trials = _trials(spec)                                  # 10 trials
    ids = [t for t, _ in trials]
    recorded = {"pA": ids[0:3], "pB": [ids[5], ids[3]]}     # as earlier runs recorded them
    todo = {tid: c.to_dict() for tid, c in trials if tid not in (ids[0], ids[5])}
    _, packs = _grid_space(spec, todo, lambda s: None, trials, recorded=recorded)
    got = packs["packs"]
    assert got["pA"] == ids[1:3] and got["pB"] == [ids[3]]   # their unfinished members
    rest = [m for pid, members in got.items() if pid not in recorded for m in members]
    assert sorted(rest) == sorted(ids[4:5] + ids[6:])        # the never-packed, packed anew
    assert all(len(m) <= 4 for m in got.values())
    again = _grid_space(spec, todo, lambda s: None, trials, recorded=recorded)[1]
    assert again == packs                                    # the same on every resume
