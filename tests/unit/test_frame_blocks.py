"""The automatic-regions recording patch: exactly the plain space-time attention output, and the
accumulated blocks equal the dense per-frame blocks of softmax over all frames' keys."""
from __future__ import annotations

import pytest
import torch

from videograin.attention.frame_blocks import FrameBlockRecordingAttention
from videograin.attention.patch import SpaceTimeSelfAttention
from videograin.attention.spacetime import split_heads

FRAMES, H, W, HEADS, DIM = 3, 4, 5, 2, 8


def _call(patch, q, k, v, codes):
    opts = {"n_heads": HEADS, "cond_or_uncond": codes, "activations_shape": [q.shape[0], 16, H, W],
            "block": ("input", 4)}
    return patch(q, k, v, opts)


def _qkv(chunks: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(chunks * FRAMES, H * W, HEADS * DIM, generator=g) for _ in range(3)]


@pytest.mark.parametrize("codes", [[0], [1, 0]])
def test_output_is_plain_spacetime_attention(codes):
    q, k, v = _qkv(len(codes))
    got = _call(FrameBlockRecordingAttention(), q, k, v, codes)
    want = _call(SpaceTimeSelfAttention(), q, k, v, codes)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_blocks_equal_the_dense_map_averaged_over_heads_and_branches():
    patch = FrameBlockRecordingAttention()
    q, k, v = _qkv(2, seed=3)
    _call(patch, q, k, v, [1, 0])
    n, hw = FRAMES * H * W, H * W
    dense = []
    for c in range(2):
        qh = split_heads(q[c * FRAMES:(c + 1) * FRAMES].reshape(1, n, -1), HEADS)[0]
        kh = split_heads(k[c * FRAMES:(c + 1) * FRAMES].reshape(1, n, -1), HEADS)[0]
        p = torch.softmax(qh @ kh.transpose(-1, -2) / DIM ** 0.5, -1).mean(0)       # [N, N] over all frames
        dense.append(torch.stack([p[f * hw:(f + 1) * hw, f * hw:(f + 1) * hw] for f in range(FRAMES)]))
    want = torch.stack(dense).mean(0)
    assert patch.accumulator.calls == 2 and patch.blocks == {("input", 4)}
    torch.testing.assert_close(patch.accumulator.mean(), want, rtol=1e-4, atol=1e-6)
    assert float(want.sum(-1).max()) < 0.999  # the rows lose mass to the other frames' keys: a real block


def test_a_block_of_another_grid_is_refused():
    patch = FrameBlockRecordingAttention()
    q, k, v = _qkv(1)
    _call(patch, q, k, v, [0])
    with pytest.raises(ValueError, match="recorded blocks disagree"):
        patch(q, k, v, {"n_heads": HEADS, "cond_or_uncond": [0], "activations_shape": [3, 16, W, H]})
