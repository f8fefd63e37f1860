"""Training: the Sec. 7.2.1 equivalence, step/eval contracts, resume, determinism, MNIST."""
import math

import polars as pl
import pytest
import torch

from conftest import tiny
from trainables import data as datasets
from trainables.config import TrialConfig
from resultstore.store import ResultStore
from trainables.train import build, evaluate, run_trial, train_epoch


def _setup(**over):
    cfg = TrialConfig.from_dict(tiny(**over))
    d = datasets.load(cfg.dataset)
    return cfg, d, build(cfg, tuple(d.x.shape[1:]), torch.device("cpu"))


def test_sec_7_2_1_beta_sigma2_equivalence_gives_the_same_adam_trajectory():
    """(beta=2, sigma2=0.01) and (beta=1, sigma2=0.02): the objectives differ by a factor 2 and
    a constant, and Adam is invariant to the factor (up to its eps, set negligible here)."""
    _, d, a = _setup(**{"noise.beta": 2.0, "noise.sigma2": 0.01})
    _, _, b = _setup(**{"noise.beta": 1.0, "noise.sigma2": 0.02})
    for run in (a, b):
        run.opt.param_groups[0]["eps"] = 1e-30
    D = d.x[0].numel()
    const = 0.5 * D * (math.log(2 * math.pi * 0.01) - 2 * math.log(2 * math.pi * 0.02))
    for _ in range(3):
        la, lb = train_epoch(a, d.x), train_epoch(b, d.x)
        assert la - 2 * lb == pytest.approx(const, rel=1e-4)
    for (n, pa), pb in zip(a.vae.named_parameters(), b.vae.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=n)
    # a different equivalent variance does follow another trajectory
    _, _, c = _setup(**{"noise.beta": 1.0, "noise.sigma2": 0.01})
    for _ in range(3):
        train_epoch(c, d.x)
    diff = max((pa - pc).abs().max() for pa, pc in zip(a.vae.parameters(), c.vae.parameters()))
    assert diff > 1e-3


@pytest.mark.parametrize("kind", ["specified", "learned", "mog"])
def test_a_training_step_changes_weights_and_an_evaluation_does_not(kind):
    cfg, d, run = _setup(**{"noise.kind": kind, "train.epochs": 1})
    splits = datasets.split(d, cfg.dataset.split, 0)
    before = {k: v.clone() for k, v in run.vae.state_dict().items()}
    gen_before = run.gen.get_state().clone()
    evaluate(run, splits.test)
    after_eval = run.vae.state_dict()
    assert all(torch.equal(before[k], after_eval[k]) for k in before)
    assert torch.equal(gen_before, run.gen.get_state())
    train_epoch(run, splits.train.x)
    changed = [k for k, v in run.vae.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("encoder") for k in changed) and any(k.startswith("decoder") for k in changed)
    if kind != "specified":
        assert any(k.startswith("noise") for k in changed)


def test_same_config_and_seed_give_the_same_numbers(tmp_path):
    cfg = TrialConfig.from_dict(tiny(**{"noise.kind": "learned"}))
    r1 = run_trial(cfg, ResultStore(str(tmp_path), "a"), log=lambda s: None)
    r2 = run_trial(cfg, ResultStore(str(tmp_path), "b"), log=lambda s: None)
    assert r1 == r2
    other = TrialConfig.from_dict(tiny(**{"noise.kind": "learned", "train.seed": 1}))
    assert run_trial(other, ResultStore(str(tmp_path), "c"), log=lambda s: None)["evlb"] != r1["evlb"]


class Interrupt(Exception):
    pass


def test_an_interrupted_trial_resumes_exactly_and_writes_each_epoch_once(tmp_path):
    cfg = TrialConfig.from_dict(tiny(**{"train.epochs": 5, "checkpoint.every": 2,
                                        "noise.kind": "mog"}))
    ref = ResultStore(str(tmp_path), "ref")
    run_trial(cfg, ref, log=lambda s: None)

    store = ResultStore(str(tmp_path), "cut")

    def stop_at_3(m):
        if m["epoch"] == 3:          # after the checkpoint at 2, before the one at 4
            raise Interrupt

    with pytest.raises(Interrupt):
        run_trial(cfg, store, report=stop_at_3, log=lambda s: None)
    assert store.status(cfg.trial_id())["state"] == "running"
    run_trial(cfg, store, log=lambda s: None)
    assert store.status(cfg.trial_id())["state"] == "completed"

    cols = ["trial_id", "epoch", "status", "evlb", "mi_xz", "sigma2", "noise_pi"]
    a = pl.read_parquet(ref.glob("trials")).select(cols).sort("epoch")
    b = pl.read_parquet(store.glob("trials")).select(cols).sort("epoch")
    assert b["epoch"].to_list() == [1, 2, 3, 4, 5]
    assert a.equals(b)
    fa = pl.read_parquet(ref.glob("factors")).sort("epoch", "factor")
    fb = pl.read_parquet(store.glob("factors")).sort("epoch", "factor")
    assert fa.drop("study").equals(fb.drop("study"))
    # one file per table once the trial is finished
    assert len(store.trial(cfg.trial_id()).parts("trials")) == 1


def test_a_finished_trial_is_not_rerun(tmp_path):
    cfg = TrialConfig.from_dict(tiny())
    store = ResultStore(str(tmp_path), "s")
    first = run_trial(cfg, store, log=lambda s: None)
    msgs = []
    assert run_trial(cfg, store, log=msgs.append) == first
    assert "already completed" in msgs[0]
    assert pl.read_parquet(store.glob("trials")).height == 2


def test_a_diverging_trial_ends_diverged_with_its_last_good_rows(tmp_path):
    cfg = TrialConfig.from_dict(tiny(**{"train.epochs": 6, "train.fault_nan_epoch": 4,
                                        "checkpoint.every": 2, "noise.kind": "learned"}))
    store = ResultStore(str(tmp_path), "s")
    last = run_trial(cfg, store, log=lambda s: None)
    st = store.status(cfg.trial_id())
    assert st["state"] == "diverged" and "epoch 4" in st["error"]
    rows = pl.read_parquet(store.glob("trials")).sort("epoch")
    assert rows["epoch"].to_list() == [1, 2, 3] and last["epoch"] == 3
    assert rows["status"].to_list() == ["running", "running", "diverged"]
    assert rows.select(pl.col("evlb").is_finite().all()).item()
    # and a resume does not retrain it
    assert run_trial(cfg, store, log=lambda s: None) == last


def test_a_learning_rate_that_explodes_at_once_is_diverged_with_no_rows(tmp_path):
    cfg = TrialConfig.from_dict(tiny(**{"train.lr": 3.0, "noise.sigma2": 1e-4}))
    store = ResultStore(str(tmp_path), "s")
    assert run_trial(cfg, store, log=lambda s: None) == {}
    assert store.status(cfg.trial_id())["state"] == "diverged"
    assert store.trial(cfg.trial_id()).parts("trials") == []


def test_short_mnist_run_lowers_the_loss_and_gives_finite_indicators(tmp_path, mnist_dir):
    cfg = TrialConfig.from_dict({"dataset.name": "mnist", "dataset.path": str(mnist_dir),
                                 "dataset.limit": 600, "model.latent_dim": 16, "train.epochs": 3,
                                 "eval.traversals": True, "train.threads": 2})
    store = ResultStore(str(tmp_path), "mnist")
    run_trial(cfg, store, log=lambda s: None)
    t = pl.read_parquet(store.glob("trials")).sort("epoch")
    assert t["train_loss"][-1] < t["train_loss"][0]
    assert t["evlb"][-1] > t["evlb"][0]
    num = t.select(pl.col(pl.Float64)).drop("noise_pi", "noise_sigma2_k", strict=False)
    assert all(num.select(pl.all().is_finite().all()).row(0))
    assert t["eval_points"][0] == 120 and t["latent_dim"][0] == 16
    codes = pl.read_parquet(store.glob("codes"))
    assert codes.height == 120 and codes["mu"].list.len().unique().to_list() == [16]
    png = store.path("traversals", f"{cfg.trial_id()}.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
