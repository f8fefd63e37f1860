"""A pack's step captured as one CUDA graph and replayed (`train.cuda_graphs: true`).

A packed step of small models is bound by kernel launches, not by flops; a graph
replays the step's hundreds of kernels with one launch. The captured step is
`pack.eager_step` itself (forward, backward, fused Adam, the noise update after
the step) on static buffers: the batch is copied into `x`, the noise is drawn
eagerly by each member's own generator into `pack.eps` (the members' numbers stay
their own generators'), and the graph replays the same kernels on them. Full
batches replay; the last partial batch runs eagerly. A member leaving changes
the shapes: the pack captures again (at most G times).

Warm-up passes (which CUDA graphs need, on a side stream) change the state they
run on, so the state is saved before them and put back after, in place (the
graph keeps its tensors' addresses). Unmeasured without a GPU: tests/test_pack_graph.py
compares a captured pack with an eager one where a GPU is visible.
"""
from __future__ import annotations

import torch

WARMUP = 3


class CapturedStep:
    def __init__(self, pack, step):
        """step(pack, x, eps): the eager step to capture (`pack.eager_step`, handed in: the
        pack module imports this one)."""
        if pack.device.type != "cuda":
            raise ValueError(f"train.cuda_graphs: captures a CUDA step; this pack runs on "
                             f"{pack.device.type}")
        self.pack, self.step, self.graph = pack, step, None
        self.x = self.loss = None

    def fits(self, xb: torch.Tensor) -> bool:
        """Full batches replay (static shapes); a partial one runs eagerly."""
        return xb.shape[1] == self.pack.runs[0].cfg.train.batch_size

    def replay(self, xb: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if self.graph is None:
            self._capture(xb, eps)
        self.x.copy_(xb)                                    # [G, B, C, h, w]
        if eps.data_ptr() != self.eps.data_ptr():
            self.eps.copy_(eps)                             # [G, B, H]
        self.graph.replay()
        return self.loss                                    # [G], overwritten by the next replay

    def recapture(self, pack) -> "CapturedStep":
        return CapturedStep(pack, self.step)

    def _capture(self, xb: torch.Tensor, eps: torch.Tensor) -> None:
        pk = self.pack
        self.x, self.eps = xb.clone(), eps if eps.is_contiguous() else eps.clone()
        saved = _state(pk)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP):
                self.step(pk, self.x, self.eps)
        torch.cuda.current_stream().wait_stream(side)
        _restore(pk, saved)
        pk.flat.grad = None                                 # the graph allocates its own
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self.step(pk, self.x, self.eps)


def _state(pk) -> list[tuple[torch.Tensor, torch.Tensor]]:
    live = [pk.flat.detach(), pk.m, pk.v, pk.steps, *pk.buffers.values()]
    return [(t, t.clone()) for t in live]


@torch.no_grad()
def _restore(pk, saved) -> None:
    for t, copy in saved:
        t.copy_(copy)
