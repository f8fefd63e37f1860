"""Packed training: a member's numbers are the unpacked trial's, its fate its own."""
import pyarrow.parquet as pq
import pytest
import torch

from conftest import Interrupt, stop_at, tiny
from trainables import data as datasets
from trainables import pack as packing
from trainables.config import TrialConfig
from trainables.pack_run import pack_id, run_pack, shared_key
from resultstore.store import ResultStore
from trainables.train import build, run_trial, set_generator
from trainables.vae import VAE

QUIET = dict(log=lambda s: None)
COLS = ("evlb", "recon_mse", "sigma2", "kl_post_prior", "mi_xz", "kl_qz_pz", "kl_qstar_pz",
        "train_loss", "n_used_factors", "n_normal_variance_factors")
# members differ in beta, sigma2, seed and learning rate
MEMBERS = [(1.0, 0.01, 0, 1e-3), (2.0, 0.05, 1, 3e-3), (0.5, 0.02, 2, 5e-4)]


def _cfgs(kind, **over):
    return [TrialConfig.from_dict(tiny(**{"noise.kind": kind, "noise.beta": b, "noise.sigma2": s2,
                                          "train.seed": sd, "train.lr": lr, **over}))
            for b, s2, sd, lr in MEMBERS]


@pytest.fixture
def float64(monkeypatch):
    """Models, noise and data in float64: a packed member must then match to rounding."""
    load = datasets.load

    def load64(cfg):
        torch.set_default_dtype(torch.float32)          # the data as it is made
        d = load(cfg)
        torch.set_default_dtype(torch.float64)
        return datasets.Data(d.x.double(), d.factors, d.index)

    monkeypatch.setattr(datasets, "load", load64)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _rows(store, table, tid):
    t = pq.read_table(store.path(table, tid))
    return t.sort_by([("epoch", "ascending")] + ([("factor", "ascending")] if table == "factors"
                                                 else [])).to_pylist()


def _assert_same(a: ResultStore, b: ResultStore, tid, rel):
    ra, rb = _rows(a, "trials", tid), _rows(b, "trials", tid)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb]
    assert [r["status"] for r in ra] == [r["status"] for r in rb]
    for x, y in zip(ra, rb):
        for c in COLS:
            assert y[c] == pytest.approx(x[c], rel=rel, abs=1e-9), (tid, x["epoch"], c)
    fa, fb = _rows(a, "factors", tid), _rows(b, "factors", tid)
    assert [f["used"] for f in fa] == [f["used"] for f in fb]
    assert [f["mi"] for f in fb] == pytest.approx([f["mi"] for f in fa], rel=rel, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["specified", "learned", "mog"])
def test_float64_members_equal_their_unpacked_trials_over_3_epochs(tmp_path, float64, kind):
    cfgs = _cfgs(kind, **{"train.epochs": 3, "checkpoint.final": "full"})   # optimizer kept
    alone, packed = ResultStore(str(tmp_path), "alone"), ResultStore(str(tmp_path), "packed")
    for c in cfgs:
        run_trial(c, alone, **QUIET)
    run_pack(cfgs, packed, **QUIET)
    for c in cfgs:
        _assert_same(alone, packed, c.trial_id(), rel=1e-6)
        assert packed.status(c.trial_id())["state"] == "completed"
        assert packed.status(c.trial_id())["pack"] == pack_id([x.trial_id() for x in cfgs])
        a, b = alone.trial(c.trial_id()).load_checkpoint(), packed.trial(c.trial_id()).load_checkpoint()
        assert a["opt"]["state"][0]["step"] == b["opt"]["state"][0]["step"] == 3 * 3  # 240/100


def test_float32_members_equal_their_unpacked_trials_after_1_epoch(tmp_path):
    cfgs = _cfgs("learned", **{"train.epochs": 1})
    alone, packed = ResultStore(str(tmp_path), "alone"), ResultStore(str(tmp_path), "packed")
    for c in cfgs:
        run_trial(c, alone, **QUIET)
    run_pack(cfgs, packed, **QUIET)
    for c in cfgs:
        _assert_same(alone, packed, c.trial_id(), rel=1e-3)


@pytest.mark.slow
def test_a_diverging_member_ends_diverged_and_the_others_go_on(tmp_path):
    cfgs = _cfgs("learned", **{"train.epochs": 3})
    bad = TrialConfig.from_dict({**tiny(**{"noise.kind": "learned", "train.epochs": 3,
                                           "train.fault_nan_epoch": 2})})
    alone, packed = ResultStore(str(tmp_path), "alone"), ResultStore(str(tmp_path), "packed")
    for c in cfgs:
        run_trial(c, alone, **QUIET)
    finals = run_pack([cfgs[0], bad, *cfgs[1:]], packed, **QUIET)
    st = packed.status(bad.trial_id())
    assert st["state"] == "diverged" and "epoch 2" in st["error"]
    rows = _rows(packed, "trials", bad.trial_id())
    assert [r["epoch"] for r in rows] == [1] and rows[0]["status"] == "diverged"
    assert finals[bad.trial_id()]["epoch"] == 1
    for c in cfgs:                                 # masked from epoch 2 on: the others unchanged
        assert packed.status(c.trial_id())["state"] == "completed"
        _assert_same(alone, packed, c.trial_id(), rel=1e-3)


@pytest.mark.slow
def test_resume_rebuilds_a_pack_from_members_at_different_epochs(tmp_path, float64):
    """One member stopped after epoch 3, one after 1, one finished: the pack resumes the two
    from their own checkpoints, leaves the finished one alone, and every row is the
    uninterrupted unpacked trial's, each (trial_id, epoch) once."""
    cfgs = _cfgs("mog", **{"train.epochs": 4})
    ref, store = ResultStore(str(tmp_path), "ref"), ResultStore(str(tmp_path), "cut")
    for c in cfgs:
        run_trial(c, ref, **QUIET)
    for c, stop in zip(cfgs, (3, 1, None)):
        if stop is None:
            run_trial(c, store, **QUIET)
        else:
            with pytest.raises(Interrupt):
                run_trial(c, store, report=stop_at(stop), **QUIET)
    done = cfgs[2].trial_id()
    before = store.status(done)
    run_pack(cfgs, store, **QUIET)
    assert store.status(done)["attempts"] == before["attempts"] == 1     # not retrained
    for c in cfgs:
        assert store.status(c.trial_id())["state"] == "completed"
        assert [r["epoch"] for r in _rows(store, "trials", c.trial_id())] == [1, 2, 3, 4]
        _assert_same(ref, store, c.trial_id(), rel=1e-6)


def test_members_must_share_everything_but_beta_sigma2_seed_and_lr(tmp_path):
    a, b = _cfgs("specified")[:2]
    assert shared_key(a) == shared_key(b)
    other = TrialConfig.from_dict(tiny(**{"model.latent_dim": 3}))
    assert shared_key(other) != shared_key(a)
    with pytest.raises(ValueError, match="differ only in"):
        run_pack([a, other], ResultStore(str(tmp_path), "s"), **QUIET)


def test_a_generator_state_from_another_kind_of_device_reseeds_deterministically():
    """A CPU checkpoint resumed on a GPU (or back): the states differ in kind, so the run
    goes on from a generator seeded by (seed, epoch), the same on every resume."""
    cfg = TrialConfig.from_dict(tiny())
    a, b = (build(cfg, (1, 28, 28), torch.device("cpu")) for _ in range(2))
    a.epoch = b.epoch = 3
    cuda_like = torch.zeros(16, dtype=torch.uint8)          # a CUDA generator's state size
    set_generator(a, cuda_like)
    set_generator(b, cuda_like)
    assert torch.equal(a.gen.get_state(), b.gen.get_state())
    assert not torch.equal(a.gen.get_state(), torch.Generator().manual_seed(0).get_state())
    same = a.gen.get_state()
    set_generator(b, same)                                   # same kind: restored as saved
    assert torch.equal(b.gen.get_state(), same)



@pytest.mark.parametrize("arch, shape", [("conv2", (1, 28, 28)), ("conv4", (3, 20, 18))])
def test_matmul_convolutions_train_a_pack_as_the_grouped_ones_do(float64, arch, shape):
    """conv="matmul" (im2col + one bmm over members, a GPU layout bench/gpu_bench.py
    measures) trains the numbers of vmap's grouped convolution; conv4 on 20x18 images
    takes the decoder's output_padding path."""
    cfgs = [TrialConfig.from_dict(tiny(**{"model.arch": arch, "train.seed": sd, "train.lr": lr,
                                          "noise.sigma2": s2, "train.batch_size": 16}))
            for _, s2, sd, lr in MEMBERS]
    x = torch.rand(48, *shape)

    def pack(conv):
        return packing.stack([build(c, shape, torch.device("cpu")) for c in cfgs], conv=conv)

    packs = {conv: pack(conv) for conv in ("grouped", "matmul")}
    losses = {conv: [v for _ in range(2) for v in packing.train_epoch(p, x).tolist()]
              for conv, p in packs.items()}
    assert losses["matmul"] == pytest.approx(losses["grouped"], rel=1e-10)
    for n, p in packs["grouped"].params.items():
        torch.testing.assert_close(packs["matmul"].params[n], p, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="conv: 'fft'; allowed: auto, grouped, matmul"):
        pack("fft")


def test_pick_conv_times_both_layouts_and_leaves_the_members_untouched():
    """conv="auto" on a GPU keeps the faster layout, timed on copies: the members' weights,
    EM parameters, Adam state and generators are those of a pack that was never timed.
    On a CPU "auto" is grouped, untimed."""
    runs = [build(c, (1, 28, 28), torch.device("cpu")) for c in _cfgs("mog")]
    pk = packing.stack(runs, conv="auto")
    assert (pk.conv, pk.conv_ms) == ("grouped", {})
    before = (pk.flat.detach().clone(), {k: b.clone() for k, b in pk.buffers.items()},
              pk.m.clone(), pk.v.clone(), pk.steps.clone(), [r.gen.get_state() for r in runs])
    fns = {c: packing._loss_fn(VAE((1, 28, 28), runs[0].cfg).to("meta"), c)
           for c in packing.CONVS}
    best, ms = packing.pick_conv(pk, fns, warmup=1, reps=2)
    assert set(ms) == {"grouped", "matmul"} and all(t > 0 for t in ms.values())
    assert best == min(ms, key=ms.get)
    assert pk.flat.grad is None
    torch.testing.assert_close(pk.flat.detach(), before[0], rtol=0, atol=0)
    for k, b in pk.buffers.items():
        torch.testing.assert_close(b, before[1][k], rtol=0, atol=0)
    for t, b in zip((pk.m, pk.v, pk.steps), before[2:5]):
        torch.testing.assert_close(t, b, rtol=0, atol=0)
    assert all(torch.equal(r.gen.get_state(), g) for r, g in zip(runs, before[5]))
    # a layout that runs out of memory is no candidate; with none left the pack fails
    def oom(*args):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    best, ms = packing.pick_conv(pk, {"grouped": fns["grouped"], "matmul": oom}, warmup=0, reps=1)
    assert best == "grouped" and ms["matmul"] == float("inf") and pk.flat.grad is None
    with pytest.raises(torch.OutOfMemoryError, match="fits in neither convolution layout"):
        packing.pick_conv(pk, {"grouped": oom, "matmul": oom}, warmup=0, reps=1)
