"""Trajectory attention (docs/design.md §10.1) against dense masked attention, and a hand-checked case."""
import math

import numpy as np
import pytest
import torch

from videograin.attention.trajectory import TrajectoryAttentionError, trajectory_attention
from videograin.motion.trajectories import Trajectories, build_trajectories


def dense_reference(q, k, v, heads, traj: Trajectories):
    """Full N×N attention in fp64 with the slot multiset as mask (a slot listed twice counts twice)."""
    b, n, c = q.shape
    d = c // heads
    count = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n).view(-1, 1).expand_as(traj.index)
    count.index_put_((rows[traj.valid], traj.index[traj.valid]), torch.ones(int(traj.valid.sum()), dtype=torch.float64),
                     accumulate=True)
    qh = q.double().view(b, n, heads, d).transpose(1, 2)
    kh = k.double().view(b, n, heads, d).transpose(1, 2)
    vh = v.double().view(b, n, heads, d).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d) + torch.log(count)  # log 0 = -inf masks
    return (scores.softmax(-1) @ vh).transpose(1, 2).reshape(b, n, c)


def random_flow(frames, image_size, seed):
    g = np.random.default_rng(seed)
    return torch.from_numpy((g.normal(size=(frames - 1, *image_size, 2)) * 10).astype(np.float32))


def random_slots(frames, size, slots, seed):
    """Arbitrary slot patterns: random indices, random validity, duplicates, slot 0 the valid token."""
    g = torch.Generator().manual_seed(seed)
    n = frames * size[0] * size[1]
    index = torch.randint(0, n, (n, slots), generator=g)
    index[:, 0] = torch.arange(n)
    index[::5, 2] = index[::5, 1]  # duplicates
    valid = torch.rand(n, slots, generator=g) < 0.5
    valid[:, 0] = True
    valid[:, -1] = False  # a trailing all-invalid column (span < S)
    index = torch.where(valid, index, torch.arange(n).view(-1, 1))
    return Trajectories(size, frames, index, valid, torch.arange(n))


def qkv(batch, n, channels, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, channels, generator=g) * scale for _ in range(3)]


CASES = [(f, size, layout) for f in (1, 2, 4, 7) for size in ((3, 5), (4, 4)) for layout in ("chain", "official")]


@pytest.mark.parametrize("frames,size,layout", CASES)
def test_matches_dense_reference_on_built_trajectories(frames, size, layout):
    image_size = (size[0] * 8, size[1] * 8)
    traj = build_trajectories(random_flow(frames, image_size, frames), image_size, [size], seed=1, layout=layout)[size]
    q, k, v = qkv(2, traj.tokens, 24, seed=frames)
    out = trajectory_attention(q, k, v, 3, traj)
    torch.testing.assert_close(out.double(), dense_reference(q, k, v, 3, traj), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("heads", [1, 2, 8])
def test_matches_dense_reference_on_arbitrary_slot_patterns(seed, heads):
    traj = random_slots(3, (2, 5), 6, seed)
    assert traj.span == 5
    q, k, v = qkv(1, traj.tokens, 16, seed)
    out = trajectory_attention(q, k, v, heads, traj)
    torch.testing.assert_close(out.double(), dense_reference(q, k, v, heads, traj), atol=1e-5, rtol=1e-5)


def test_chunking_does_not_change_the_result():
    traj = random_slots(4, (3, 3), 4, seed=9)
    q, k, v = qkv(2, traj.tokens, 8, seed=9)
    whole = trajectory_attention(q, k, v, 2, traj)
    one_by_one = trajectory_attention(q, k, v, 2, traj, chunk_bytes=1)  # one query token per chunk
    torch.testing.assert_close(one_by_one, whole, atol=1e-6, rtol=1e-6)


def test_branches_share_the_trajectories():
    traj = random_slots(2, (2, 2), 3, seed=4)
    q, k, v = qkv(2, traj.tokens, 8, seed=4)
    both = trajectory_attention(q, k, v, 2, traj)
    for b in range(2):
        torch.testing.assert_close(both[b:b + 1], trajectory_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], 2, traj))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_fp32_and_return_their_dtype(dtype):
    traj = random_slots(3, (2, 3), 4, seed=1)
    q, k, v = (x.to(dtype) for x in qkv(1, traj.tokens, 16, seed=1))
    out = trajectory_attention(q, k, v, 2, traj)
    assert out.dtype == dtype
    expected = dense_reference(q.float(), k.float(), v.float(), 2, traj)
    torch.testing.assert_close(out.double(), expected, atol=2e-2, rtol=2e-2)


def test_hand_checked_two_frame_case():
    """1×1 latent, 2 frames, zero flow: tokens 0 and 1 form one chain. Token 0's scores are 0 (self) and
    ln 3 (partner), so its output is 1/4·v0 + 3/4·v1."""
    traj = build_trajectories(torch.zeros(1, 8, 8, 2), (8, 8), [(1, 1)], seed=0)[(1, 1)]
    assert traj.index.tolist() == [[0, 1], [1, 0]] and bool(traj.valid.all())
    d = 2
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    k = torch.tensor([[[0.0, 0.0], [math.sqrt(d) * math.log(3.0), 0.0]]])
    v = torch.tensor([[[4.0, 0.0], [0.0, 8.0]]])
    out = trajectory_attention(q, k, v, 1, traj)
    torch.testing.assert_close(out[0, 0], torch.tensor([1.0, 6.0]))
    torch.testing.assert_close(out[0, 1], torch.tensor([2.0, 4.0]))  # q = 0: equal weights


def test_a_token_without_partners_keeps_its_value():
    image_size, size = (16, 16), (2, 2)
    flow = torch.full((1, 16, 16, 2), 64.0)  # every link leaves the grid: all chains have length 1
    traj = build_trajectories(flow, image_size, [size], seed=0)[size]
    assert traj.span == 1
    q, k, v = qkv(1, traj.tokens, 4, seed=0)
    torch.testing.assert_close(trajectory_attention(q, k, v, 2, traj), v)


def test_bad_shapes_are_named():
    traj = random_slots(2, (2, 2), 3, seed=0)
    q, k, v = qkv(1, traj.tokens, 8, seed=0)
    with pytest.raises(TrajectoryAttentionError, match="do not match the trajectories"):
        trajectory_attention(q[:, :-1], k[:, :-1], v[:, :-1], 2, traj)
    with pytest.raises(TrajectoryAttentionError, match="one shape"):
        trajectory_attention(q, k[:, :-1], v, 2, traj)
    with pytest.raises(TrajectoryAttentionError, match="not divisible by 3 heads"):
        trajectory_attention(q, k, v, 3, traj)
