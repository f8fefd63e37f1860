"""A pack's own Adam, its members leaving, its vectorised evaluation and its refusals."""
import pytest
import torch
from torch import nn

from conftest import tiny
from test_pack import MEMBERS, float64  # noqa: F401  (a fixture)
from trainables import data as datasets
from trainables import pack as packing
from trainables import pack_eval
from trainables.config import TrialConfig
from trainables.train import build, evaluate, load_splits, with_indicators

SHAPE, CPU = (1, 28, 28), torch.device("cpu")


def _runs(kind="learned", **over):
    return [build(TrialConfig.from_dict(tiny(**{"noise.kind": kind, "noise.beta": b,
                                                "noise.sigma2": s2, "train.seed": sd,
                                                "train.lr": lr, **over})), SHAPE, CPU)
            for b, s2, sd, lr in MEMBERS]


def _adam(run, **settings):
    run.opt = torch.optim.Adam(run.vae.parameters(), lr=run.cfg.train.lr, **settings)


def test_fused_adam_is_torch_adam_per_member_in_float64(float64):
    """Each member's lr, its own step count (one resumed 5 steps ahead) and the optimizer's
    settings as built (a weight decay here): 4 steps equal torch.optim.Adam's to 1e-14."""
    runs = _runs()
    for r in runs:
        _adam(r, weight_decay=0.01)
    grads = [[torch.randn_like(p) for p in runs[0].vae.parameters()] for _ in range(9)]
    for g in grads[:5]:                                      # member 2 resumed at step 5
        for p, d in zip(runs[2].vae.parameters(), g):
            p.grad = d.clone()
        runs[2].opt.step()
    pk = packing.stack(runs)
    assert pk.adam["weight_decay"] == 0.01 and pk.steps.tolist() == [0, 0, 5]
    for g in grads[5:]:
        pk.flat.grad = torch.cat([d.reshape(-1) for d in g]).expand(3, -1).clone()   # [G, P]
        packing.adam(pk)
        for r in runs:
            for p, d in zip(r.vae.parameters(), g):
                p.grad = d.clone()
            r.opt.step()
    for i, r in enumerate(runs):
        want = torch.cat([p.detach().reshape(-1) for p in r.vae.parameters()])
        torch.testing.assert_close(pk.flat[i].detach(), want, rtol=1e-14, atol=1e-14)
        st = [r.opt.state[p] for p in r.vae.parameters()]
        torch.testing.assert_close(pk.m[i], torch.cat([s["exp_avg"].reshape(-1) for s in st]),
                                   rtol=1e-14, atol=1e-14)
        assert pk.steps[i] == st[0]["step"]


@pytest.mark.parametrize("settings, msg", [
    ({"amsgrad": True}, "implements amsgrad=False"),
    ({"maximize": True}, "implements maximize=False"),
])
def test_adam_settings_a_pack_cannot_run_are_refused(settings, msg):
    runs = _runs()
    for r in runs:
        _adam(r, **settings)
    with pytest.raises(ValueError, match=msg):
        packing.stack(runs)
    runs = _runs()
    _adam(runs[1], eps=1e-6)
    with pytest.raises(ValueError, match="must share Adam's eps"):
        packing.stack(runs)


def test_a_member_that_leaves_leaves_the_others_bit_identical(float64):
    """Member 1 leaves after one epoch: its rows are gone from every stacked tensor, and
    members 0 and 2 train on exactly as in a pack where it stayed."""
    x = torch.rand(60, *SHAPE)
    stay, leave = packing.stack(_runs("mog")), packing.stack(_runs("mog"))
    for pk in (stay, leave):
        packing.train_epoch(pk, x)
    packing.leave(leave, [0, 2])
    assert leave.G == 2 and leave.flat.shape[0] == leave.m.shape[0] == leave.steps.shape[0] == 2
    assert all(b.shape[0] == 2 for b in leave.buffers.values())
    for _ in range(2):
        packing.train_epoch(stay, x)
        packing.train_epoch(leave, x)
    for t in ("flat", "m", "v", "steps"):
        assert torch.equal(getattr(leave, t).detach(), getattr(stay, t).detach()[[0, 2]]), t
    for k, b in stay.buffers.items():
        assert torch.equal(leave.buffers[k], b[[0, 2]]), k


@pytest.mark.parametrize("rows", [[0, 1, 2], [2, 0]])
def test_members_evaluated_together_equal_each_alone(float64, rows):
    """EVLB, reconstruction, codes and every indicator of a vmapped evaluation are
    `train.evaluate`'s for each member (float64, 1e-9), for all members or some."""
    runs = _runs("mog", **{"eval.max_points": 130})
    train_x, test = load_splits(runs[0].cfg, CPU)
    pk = packing.stack(runs)
    packing.train_epoch(pk, datasets.as_float(train_x[:60]))
    for g, r in enumerate(runs):
        packing.sync(pk, g)
        r.epoch = 1
    evs = pack_eval.evaluate(pk, test, rows, chunk=50)       # chunks of 50, 50 and 30
    for g, ev in zip(rows, evs):
        ev = with_indicators(runs[g], {k: v for k, v in ev.items() if k != "gen"}, ev["gen"])
        want = evaluate(runs[g], test, chunk=50)
        for k in ("evlb", "recon_mse", "eval_points"):
            assert ev[k] == pytest.approx(want[k], rel=1e-9), k
        for k in ("mu", "logvar"):
            torch.testing.assert_close(ev[k], want[k], rtol=1e-9, atol=1e-12)
        a, b = ev["indicators"], want["indicators"]
        assert a.scalars == pytest.approx(b.scalars, rel=1e-9)
        for k, f in b.factors.items():
            torch.testing.assert_close(a.factors[k].double(), f.double(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("conv, why", [
    (nn.Conv2d(2, 3, (3, 4)), "not square"),
    (nn.Conv2d(2, 3, 3, stride=(1, 2)), "stride"),
    (nn.Conv2d(2, 3, 3, padding=(0, 1)), "padding"),
    (nn.Conv2d(2, 3, 3, padding="same"), "padding"),
    (nn.Conv2d(2, 3, 3, dilation=2), "dilation"),
    (nn.Conv2d(2, 4, 3, groups=2), "groups"),
    (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), "padding_mode"),
    (nn.ConvTranspose2d(2, 3, 4, 2, 1, dilation=2), "dilation"),
    (nn.Conv2d(2, 3, 3, bias=False), "no bias"),
])
def test_matmul_convolutions_refuse_what_they_cannot_express(conv, why):
    with pytest.raises(ValueError, match=f"matmul cannot run enc.0 .*{why}"):
        packing._matmul_convs(nn.Sequential(conv), "enc.")
    packing.check_matmul("ok", nn.Conv2d(2, 3, 4, 2, 1))      # App. D's kind: accepted


def test_each_members_noise_is_its_own_generators_draw():
    """One draw per member into the pack's buffer, full batch and partial: bit for bit
    what the member's generator gives the unpacked trial."""
    runs = _runs()
    gens = [torch.Generator().set_state(r.gen.get_state()) for r in runs]
    pk = packing.stack(runs)
    for b in (100, 37):
        eps = packing.noise(pk, b)                                   # [G, b, H]
        for g, e in zip(gens, eps):
            assert torch.equal(e, torch.randn(b, 4, generator=g))
