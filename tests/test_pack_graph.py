"""`train.cuda_graphs`: a captured pack step replays the eager step's numbers. Marked
`gpu` (skipped where no GPU is visible); the CPU dry run checks only the refusal."""
import pytest
import torch

from conftest import GPU_DRY_RUN, tiny
from test_pack import MEMBERS
from trainables import pack as packing
from trainables.config import TrialConfig
from trainables.train import build

pytestmark = pytest.mark.gpu
SHAPE = (1, 28, 28)


def _pack(device, graphs, kind="mog"):
    cfgs = [TrialConfig.from_dict(tiny(**{"noise.kind": kind, "noise.beta": b, "noise.sigma2": s2,
                                          "train.seed": sd, "train.lr": lr,
                                          "train.batch_size": 16, "train.device": device}))
            for b, s2, sd, lr in MEMBERS]
    return packing.stack([build(c, SHAPE, torch.device(device)) for c in cfgs], conv="grouped",
                         graphs=graphs)


@pytest.mark.skipif(GPU_DRY_RUN, reason="a CUDA graph needs CUDA")
@pytest.mark.parametrize("kind", ["learned", "mog"])
def test_a_captured_pack_trains_the_eager_packs_numbers(kind):
    """Two epochs of 56 images (3 full batches replayed, a partial one eager), a member
    leaving between them (captured again): weights, moments and noise parameters as the
    eager pack's, bit for bit (the same kernels on the same buffers)."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    x = torch.rand(56, *SHAPE, device="cuda")
    eager, graphed = _pack("cuda", False, kind), _pack("cuda", True, kind)
    for pk in (eager, graphed):
        a = packing.train_epoch(pk, x)
        packing.leave(pk, [0, 2])
        b = packing.train_epoch(pk, x)
        pk.losses = torch.cat([a, b])
    assert graphed.graph is not None and graphed.graph.graph is not None
    torch.testing.assert_close(graphed.losses, eager.losses, rtol=0, atol=0)
    for t in ("flat", "m", "v", "steps"):
        torch.testing.assert_close(getattr(graphed, t).detach(), getattr(eager, t).detach(),
                                   rtol=0, atol=0)
    for k, b in eager.buffers.items():
        torch.testing.assert_close(graphed.buffers[k], b, rtol=0, atol=0)


def test_cuda_graphs_refuse_a_cpu_pack():
    with pytest.raises(ValueError, match="train.cuda_graphs: captures a CUDA step"):
        _pack("cpu", True)
