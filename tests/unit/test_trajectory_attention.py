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


# ------------------------------------------------------------------ grouped route (attention/chain_groups.py)

from videograin.attention import chain_groups  # noqa: E402
from videograin.attention.chain_groups import ChainGroupError, build_plan, chain_plan, grouped_attention  # noqa: E402
from videograin.attention.trajectory import attention_route  # noqa: E402


def built(frames, size, seed=0, layout="chain", scale=10.0):
    image_size = (size[0] * 8, size[1] * 8)
    g = np.random.default_rng(seed)
    flow = torch.from_numpy((g.normal(size=(frames - 1, *image_size, 2)) * scale).astype(np.float32)) \
        if frames > 1 else torch.zeros(0, *image_size, 2)
    return build_trajectories(flow, image_size, [size], seed=seed, layout=layout)[size]


GROUPED = [(f, size, b) for f in range(1, 9) for size, b in (((3, 5), 2), ((4, 4), 1), ((2, 7), 2), ((5, 3), 1))]


@pytest.mark.parametrize("frames,size,batch", GROUPED)
def test_grouped_route_equals_gather_route_and_dense_reference(frames, size, batch):
    """Random flows (±10 px: chains collide and leave the frame) on square and non-square grids, F = 1..8."""
    traj = built(frames, size, seed=frames)
    assert attention_route(traj) == "grouped"
    q, k, v = qkv(batch, traj.tokens, 24, seed=frames + 10 * batch)
    expected = dense_reference(q, k, v, 3, traj)
    gather = trajectory_attention(q, k, v, 3, traj, route="gather")
    for kernel in chain_groups.KERNELS:
        out = grouped_attention(q, k, v, 3, chain_plan(traj, "cpu"), 2 ** 28, kernel)
        torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, gather, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trajectory_attention(q, k, v, 3, traj), out, atol=1e-5, rtol=1e-5)


def test_built_trajectories_cover_mixed_lengths_collisions_and_exits():
    """The cases above are not all full-length chains: short, long and one-cell chains, and bins holding
    several chains (so the mask across chains is exercised)."""
    traj = built(8, (4, 4), seed=8)
    lengths = torch.bincount(traj.chain)
    assert int(lengths.min()) == 1 and int(lengths.max()) >= 3 and len(set(lengths.tolist())) >= 3
    plan = build_plan(traj)
    real = (plan.dest < traj.tokens).view(plan.bins, plan.cap)
    chain = traj.chain[plan.source].view(plan.bins, plan.cap)
    chains_per_bin = [len(set(chain[b][real[b]].tolist())) for b in range(plan.bins)]
    assert max(chains_per_bin) >= 2


def test_plan_packs_every_token_once_and_masks_other_chains():
    traj = built(6, (3, 5), seed=3)
    plan = build_plan(traj)
    real = plan.dest < traj.tokens
    assert sorted(plan.dest[real].tolist()) == list(range(traj.tokens))  # each token exactly once
    assert torch.equal(plan.source[real], plan.dest[real])
    assert plan.cap == traj.longest and plan.bins * plan.cap == plan.dest.numel() and plan.fill < 1  # padding too
    block = torch.where(real, traj.chain[plan.source], -1 - torch.arange(plan.dest.numel())).view(plan.bins, plan.cap)
    same = block.unsqueeze(2) == block.unsqueeze(1)
    bias = plan.mask(0, plan.bins)[:, 0]
    assert torch.equal(bias == 0, same) and bool(torch.isneginf(bias[~same]).all())
    torch.testing.assert_close(plan.mask(3, 7), plan.mask(0, plan.bins)[3:7], rtol=0, atol=0)
    for batch in (1, 2):  # flat rows: every output row written once, padding to distinct scratch rows
        source, dest = plan.flat(batch)
        assert dest.unique().numel() == dest.numel() == source.numel() == plan.dest.numel() * batch
        assert bool((dest.sort().values[:batch * traj.tokens] == torch.arange(batch * traj.tokens)).all())
        written = dest < batch * traj.tokens
        assert torch.equal(source[written], dest[written])
    # members of a chain sit in one bin, contiguous and in frame order
    frame = plan.source // (traj.size[0] * traj.size[1])
    for c in range(int(traj.chain.max()) + 1):
        at = (real & (traj.chain[plan.source] == c)).nonzero().view(-1)
        assert len(set((at // plan.cap).tolist())) == 1 and torch.equal(at, torch.arange(at[0], at[0] + at.numel()))
        assert bool((frame[at].diff() > 0).all())


@pytest.mark.parametrize("lengths,cap,bins,groups", [
    ([3, 1, 2, 2, 4], 4, 3, [[0, 1], [2, 3], [4]]),           # 4 | 3+1 | 2+2: no free slot
    ([1] * 9, 4, 3, [[0, 1, 2, 3], [4, 5, 6, 7], [8]]),
    ([2, 3, 3, 1, 1], 4, 3, [[0], [1, 4], [2, 3]]),  # the 1s fill the 3s' bins, not the 2's (fullest first)
])
def test_best_fit_decreasing_packing(lengths, cap, bins, groups):
    bin_of, offset_of, count = chain_groups._pack(lengths, cap)
    assert count == bins
    contents = {}
    for c, (b, o) in enumerate(zip(bin_of, offset_of)):
        contents.setdefault(b, []).append((o, c))
    assert sorted(sorted(c for _, c in v) for v in contents.values()) == groups
    for v in contents.values():  # chains of a bin do not overlap and stay inside it
        used = [(o, o + lengths[c]) for o, c in sorted(v)]
        assert used[0][0] == 0 and all(a[1] <= b[0] for a, b in zip(used, used[1:])) and used[-1][1] <= cap


def test_a_one_by_one_budget_runs_one_bin_per_chunk_with_at_most_f_keys(monkeypatch):
    """Never an Nq×Nk matrix: every attention call sees cap ≤ F queries and keys per bin, in bounded chunks."""
    traj = built(5, (3, 3), seed=2)
    q, k, v = qkv(2, traj.tokens, 8, seed=2)
    whole = trajectory_attention(q, k, v, 2, traj)
    shapes = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(qp, kp, vp, **kw):
        shapes.append((tuple(qp.shape), tuple(kp.shape)))
        return real(qp, kp, vp, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    one = trajectory_attention(q, k, v, 2, traj, chunk_bytes=1)
    plan = chain_plan(traj, "cpu")
    assert len(shapes) == plan.bins
    assert all(s == ((1, 2 * 2, plan.cap, 4),) * 2 for s in shapes) and plan.cap <= traj.frames
    torch.testing.assert_close(one, whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_grouped_route_low_precision_on_cpu(dtype):
    traj = built(4, (3, 4), seed=5)
    q, k, v = (x.to(dtype) for x in qkv(2, traj.tokens, 16, seed=5))
    out = trajectory_attention(q, k, v, 2, traj)
    assert out.dtype == dtype and attention_route(traj) == "grouped"
    gather = trajectory_attention(q, k, v, 2, traj, route="gather")
    # both compute in fp32 from the same rounded inputs: at most one rounding step of the output dtype apart
    ulp = torch.finfo(dtype).eps * gather.float().abs().clamp(min=1)
    assert bool(((out.float() - gather.float()).abs() <= ulp).all())
    torch.testing.assert_close(out.double(), dense_reference(q.float(), k.float(), v.float(), 2, traj),
                               atol=2e-2, rtol=2e-2)


def _corrupt(traj, how):
    index, valid = traj.index.clone(), traj.valid.clone()
    row = int((valid.sum(1) >= 2).nonzero()[0])
    if how == "drop":      # one chain member missing from a row
        valid[row, 1] = False
        index[row, 1] = row
    elif how == "twice":   # a member listed twice
        index[row, 1] = row
    elif how == "foreign":  # a slot outside the token's chain
        index[row, 1] = int((traj.chain != traj.chain[row]).nonzero()[0])
    elif how == "self":    # slot 0 not the token itself
        index[row, 0], index[row, 1] = index[row, 1].clone(), index[row, 0].clone()
    return Trajectories(traj.size, traj.frames, index, valid, traj.chain, "chain")


@pytest.mark.parametrize("how", ["drop", "twice", "foreign", "self"])
def test_chain_layout_whose_slots_are_not_its_chains_takes_the_gather_route(how):
    traj = _corrupt(built(4, (3, 3), seed=1, scale=3.0), how)
    assert build_plan(traj) is None and attention_route(traj) == "gather"
    q, k, v = qkv(1, traj.tokens, 8, seed=1)
    torch.testing.assert_close(trajectory_attention(q, k, v, 2, traj).double(), dense_reference(q, k, v, 2, traj),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(TrajectoryAttentionError, match="grouped route needs"):
        trajectory_attention(q, k, v, 2, traj, route="grouped")


def test_official_layout_and_arbitrary_slots_take_the_gather_route():
    assert attention_route(built(4, (4, 4), seed=1, layout="official")) == "gather"
    assert attention_route(random_slots(3, (2, 5), 6, seed=0)) == "gather"


def test_plan_is_built_once_per_trajectories_and_kept(monkeypatch):
    traj = built(3, (2, 3), seed=4)
    calls = []
    real = chain_groups.build_plan
    monkeypatch.setattr(chain_groups, "build_plan", lambda t: calls.append(t) or real(t))
    q, k, v = qkv(1, traj.tokens, 8, seed=4)
    first = chain_plan(traj, "cpu")
    for _ in range(3):
        trajectory_attention(q, k, v, 2, traj)
    assert chain_plan(traj, "cpu") is first and calls == [traj]
    assert first.flat(2) is first.flat(2)


def test_unknown_route_and_kernel_are_named():
    traj = built(2, (2, 2), seed=0)
    q, k, v = qkv(1, traj.tokens, 8, seed=0)
    with pytest.raises(TrajectoryAttentionError, match="unknown route"):
        trajectory_attention(q, k, v, 2, traj, route="fast")
    with pytest.raises(ChainGroupError, match="unknown grouped kernel"):
        grouped_attention(q, k, v, 2, chain_plan(traj, "cpu"), 2 ** 20, "flash")
