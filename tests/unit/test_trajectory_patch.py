"""Trajectory attention inside the attn1 patches (docs/design.md §10.1): after the space-time (or
windowed, or modulated) output, at the grids the model carries trajectories for, and nowhere else."""
import torch

from videograin.attention.patch import SpaceTimeSelfAttention, STLayoutAttention, branch_self_attention
from videograin.attention.settings import STLayoutSettings
from videograin.attention.spacetime import spacetime_attention
from videograin.attention.trajectory import TRAJECTORIES_KEY, trajectory_attention
from videograin.attention.windows import WINDOWS_KEY, TemporalWindows
from videograin.motion.trajectories import build_trajectories

from test_stlayout import DIM, F, H, HEADS, W, branch, make_layout, options, qkv


def _trajectories(size=(H, W), seed=0):
    flow = torch.zeros(F - 1, 8 * H, 8 * W, 2)
    flow[..., 0] = 8.0  # one cell to the right per frame: chains cross the frames
    return build_trajectories(flow, (8 * H, 8 * W), [size], seed)


def _with(opts, trajectories):
    return {**opts, TRAJECTORIES_KEY: trajectories}


def test_spacetime_patch_is_followed_by_trajectory_attention_per_branch():
    q, k, v = qkv(2 * F)
    trajs = _trajectories()
    out = SpaceTimeSelfAttention()(q, k, v, _with(options([1, 0], 20), trajs))
    for chunk in range(2):
        flat = [branch(t, chunk).reshape(1, F * H * W, -1) for t in (q, k, v)]
        st = spacetime_attention(*flat, HEADS)
        expected = trajectory_attention(flat[0], flat[1], st, HEADS, trajs[(H, W)]).reshape(F, H * W, -1)
        torch.testing.assert_close(branch(out, chunk), expected)
    assert not torch.allclose(out, SpaceTimeSelfAttention()(q, k, v, options([1, 0], 20)))


def test_windowed_and_modulated_outputs_are_the_values_of_trajectory_attention():
    q, k, v = qkv(2 * F)
    trajs = _trajectories()
    layout = make_layout()
    settings = STLayoutSettings(self_branch="both")
    windows = {WINDOWS_KEY: TemporalWindows(2, 1, 1)}
    for patch in (SpaceTimeSelfAttention(), STLayoutAttention("self", layout, settings)):
        opts = {**options([1, 0], 0), **windows}
        plain = patch(q, k, v, opts)
        out = patch(q, k, v, _with(opts, trajs))
        for chunk in range(2):
            flat = [branch(t, chunk).reshape(1, F * H * W, -1) for t in (q, k, v)]
            st = branch(plain, chunk).reshape(1, F * H * W, -1)
            expected = trajectory_attention(flat[0], flat[1], st, HEADS, trajs[(H, W)]).reshape(F, H * W, -1)
            torch.testing.assert_close(branch(out, chunk), expected)


def test_other_grids_and_empty_trajectories_are_bit_identical():
    q, k, v = qkv(2 * F)
    layout = make_layout()
    elsewhere = _trajectories(size=(2, 2))  # a grid this layer does not have
    for patch in (SpaceTimeSelfAttention(), STLayoutAttention("self", layout, STLayoutSettings(self_branch="both"))):
        base = patch(q, k, v, options([1, 0], 0))
        assert torch.equal(patch(q, k, v, _with(options([1, 0], 0), elsewhere)), base)
        assert torch.equal(patch(q, k, v, _with(options([1, 0], 0), {})), base)
        assert torch.equal(patch(q, k, v, _with(options([1, 0], 0), None)), base)


def test_branch_self_attention_with_one_cond_branch():
    q, k, v = qkv(F)
    trajs = _trajectories()
    opts = _with(options([0], 5), trajs)
    out = branch_self_attention(q, k, v, HEADS, opts)
    flat = [t.reshape(1, F * H * W, -1) for t in (q, k, v)]
    st = spacetime_attention(*flat, HEADS)
    torch.testing.assert_close(out, trajectory_attention(flat[0], flat[1], st, HEADS, trajs[(H, W)])
                               .reshape(F, H * W, HEADS * DIM))
