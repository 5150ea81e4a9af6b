"""attn1 replacement that records each frame's diagonal block of space-time self-attention
(docs/design.md §10 "Automatic masks by clustering", §18).

Installed at the 32×32-equivalent blocks (latent/2) of the automatic-regions inversion. Per CFG branch
it calls `masks.clusters.FrameBlockAccumulator.attend`, which returns the plain space-time attention
output over all F frames (as `SpaceTimeSelfAttention`) and adds the heads-averaged per-frame blocks
to one accumulator shared by every recorded block, step and branch. Nothing here imports ComfyUI.
"""
from __future__ import annotations

import threading

import torch

from ..masks.clusters import FrameBlockAccumulator
from .patch import cfg_chunks, spatial_size


class FrameBlockRecordingAttention:
    """Plain space-time self-attention that feeds a `FrameBlockAccumulator` (made at the first call,
    when the layer's token grid is known). Every block it is installed on must share one grid."""

    def __init__(self):
        self.accumulator: FrameBlockAccumulator | None = None
        self.blocks: set = set()  # the blocks that ran, to check the patch was reached
        self._lock = threading.Lock()  # cond and uncond may run in two threads

    def __deepcopy__(self, memo):  # travels in model_options, which ComfyUI deep-copies
        return self

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        heads = extra_options["n_heads"]
        codes, frames = cfg_chunks(extra_options, q.shape[0])
        tokens, width = q.shape[1], q.shape[2]
        h, w = spatial_size(extra_options, tokens)
        with self._lock:
            if self.accumulator is None:
                self.accumulator = FrameBlockAccumulator(frames, h, w, device=q.device)
            acc = self.accumulator
            if (acc.frames, acc.h, acc.w) != (frames, h, w):
                raise ValueError(f"recorded blocks disagree: {acc.frames} frames of {acc.h}x{acc.w} before, "
                                 f"{frames} of {h}x{w} at {extra_options.get('block')}")
            self.blocks.add(tuple(extra_options.get("block") or ()))
            outs = []
            for c in range(len(codes)):
                rows = slice(c * frames, (c + 1) * frames)
                out = acc.attend(q[rows].reshape(1, frames * tokens, width),
                                 k[rows].reshape(1, frames * tokens, width),
                                 v[rows].reshape(1, frames * tokens, width), heads)
                outs.append(out.reshape(frames, tokens, width))
        return torch.cat(outs)
