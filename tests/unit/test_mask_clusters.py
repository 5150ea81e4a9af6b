"""Automatic regions: the frame-block accumulator against a dense softmax, k-means, label matching,
masks and names, and the whole chain on a deterministic feature fixture with moving regions."""
from __future__ import annotations

import math

import pytest
import torch

from videograin.attention.spacetime import spacetime_attention
from videograin.masks.clusters import (ClusterError, FrameBlockAccumulator, best_assignment, cluster_frames,
                                       labels_to_masks, match_labels, name_clusters, regions_from_affinity)


def dense_blocks(q: torch.Tensor, k: torch.Tensor, heads: int, frames: int) -> torch.Tensor:
    """Oracle: materialise softmax over all F·hw keys (float64), average heads, take diagonal blocks."""
    n, c = q.shape[1:]
    d, hw = c // heads, n // frames
    qh = q.double().reshape(-1, n, heads, d).transpose(1, 2)
    kh = k.double().reshape(-1, n, heads, d).transpose(1, 2)
    p = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), -1).mean(1)   # [B, N, N]
    return torch.stack([p[:, f * hw:(f + 1) * hw, f * hw:(f + 1) * hw] for f in range(frames)], 1).mean(0)


@pytest.mark.parametrize("chunk_elements", [10, 1 << 24])   # one query per chunk, and whole frames
def test_accumulator_equals_dense_diagonal_blocks(chunk_elements):
    g = torch.Generator().manual_seed(0)
    frames, h, w, heads, d = 3, 2, 3, 2, 4
    acc = FrameBlockAccumulator(frames, h, w, chunk_elements=chunk_elements)
    calls = [(torch.randn(2, frames * h * w, heads * d, generator=g) * 2,
              torch.randn(2, frames * h * w, heads * d, generator=g) * 2) for _ in range(2)]
    for q, k in calls:
        acc.add(q, k, heads)
    want = torch.stack([dense_blocks(q, k, heads, frames) for q, k in calls]).mean(0)
    assert acc.calls == 4
    assert (acc.mean().double() - want).abs().max() < 1e-6
    # Rows of a diagonal block sum to the share of attention on the own frame: below 1.
    assert (acc.mean().sum(-1) < 1).all()


@pytest.mark.parametrize("fused", [None, False])                    # fused LSE kernel, and its fallback
def test_attend_returns_plain_attention_and_records_the_same_blocks(fused):
    g = torch.Generator().manual_seed(1)
    frames, h, w, heads, d = 3, 2, 2, 2, 8
    q, k, v = (torch.randn(2, frames * h * w, heads * d, generator=g) for _ in range(3))
    acc = FrameBlockAccumulator(frames, h, w, chunk_elements=8)
    acc.fused = fused
    out = acc.attend(q, k, v, heads)
    assert acc.fused is (fused is None)                                # the CPU build has the fused kernel
    assert (out - spacetime_attention(q, k, v, heads)).abs().max() < 1e-5
    assert acc.calls == 2 and (acc.mean().double() - dense_blocks(q, k, heads, frames)).abs().max() < 1e-6


def test_add_with_a_given_lse_uses_it():
    g = torch.Generator().manual_seed(2)
    frames, h, w, heads, d = 2, 2, 2, 2, 4
    q, k = (torch.randn(1, frames * h * w, heads * d, generator=g) for _ in range(2))
    qh, kh = (x.reshape(1, -1, heads, d).transpose(1, 2) for x in (q, k))
    lse = torch.logsumexp(qh @ kh.transpose(-1, -2) / math.sqrt(d), -1)
    exact, shifted = FrameBlockAccumulator(frames, h, w), FrameBlockAccumulator(frames, h, w)
    exact.add(q, k, heads, lse=lse)
    shifted.add(q, k, heads, lse=lse + math.log(2))                    # a doubled partition function
    assert (exact.mean().double() - dense_blocks(q, k, heads, frames)).abs().max() < 1e-6
    assert torch.allclose(shifted.mean(), exact.mean() / 2)


def test_accumulator_refuses_wrong_shapes():
    acc = FrameBlockAccumulator(2, 2, 2)
    with pytest.raises(ValueError, match="make 8"):
        acc.add(torch.zeros(1, 6, 4), torch.zeros(1, 6, 4), 2)
    with pytest.raises(ValueError, match="divisible"):
        acc.add(torch.zeros(1, 8, 5), torch.zeros(1, 8, 5), 2)
    with pytest.raises(ValueError, match="no self-attention call"):
        acc.mean()


def blobs(frames: int, hw: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows far apart per true cluster (centres ~N(0, 1) in hw dims, noise 0.01)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.stack([torch.randperm(hw, generator=g) % k for _ in range(frames)])   # [F, hw]
    centres = torch.randn(frames, k, hw, generator=g)
    rows = torch.stack([centres[f][truth[f]] for f in range(frames)]) + 0.01 * torch.randn(frames, hw, hw, generator=g)
    return rows, truth


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when label vectors a and b split the items identically (labels may differ by a permutation)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_separated_clusters_and_is_deterministic():
    rows, truth = blobs(3, 36, 4, seed=1)
    labels = cluster_frames(rows, 4, seed=7, n_init=4, size=(6, 6))
    assert labels.shape == (3, 6, 6) and labels.dtype == torch.long
    for f in range(3):
        assert same_partition(labels[f].flatten(), truth[f])
        sizes = torch.bincount(labels[f].flatten(), minlength=4)
        assert (sizes[:-1] >= sizes[1:]).all()                       # label 0 is the largest cluster
    assert torch.equal(labels, cluster_frames(rows, 4, seed=7, n_init=4, size=(6, 6)))


def test_regions_from_affinity_is_the_whole_chain():
    rows, _ = blobs(2, 16, 2, seed=3)
    want = labels_to_masks(match_labels(cluster_frames(rows, 2, seed=5, n_init=3), 2), 2, 8, 8)
    assert torch.equal(regions_from_affinity(rows, (4, 4), 2, 8, 8, seed=5, n_init=3), want)


def test_cluster_count_is_checked():
    rows = torch.rand(1, 4, 4)
    with pytest.raises(ClusterError, match="4 tokens"):
        cluster_frames(rows, 5)
    with pytest.raises(ClusterError):
        cluster_frames(rows, 0)
    with pytest.raises(ValueError, match="size"):
        cluster_frames(torch.rand(1, 6, 6), 2)                        # 6 tokens: not a square grid


def test_best_assignment_is_optimal_up_to_seven_and_greedy_above():
    score = torch.tensor([[10.0, 9.0], [9.0, 0.0]])
    assert best_assignment(score) == [1, 0]                           # 18 beats greedy's 10
    big = torch.eye(9) * 5
    big[0, 1] = 6
    assert best_assignment(big)[0] == 1                               # greedy takes the highest entry first


@pytest.mark.parametrize("k", [3, 9])                                 # brute force and greedy paths
def test_match_labels_fixes_a_permuted_labelling(k):
    g = torch.Generator().manual_seed(k)
    base = (torch.arange(2 * k) // 2).expand(8, 2 * k).clone()       # k vertical stripes, 2 px wide
    moved = [base]
    for f in range(1, 4):
        m = moved[-1].clone()
        m[f] = torch.roll(m[f], 1)                                    # a little motion in each frame
        moved.append(m)
    labels = torch.stack([moved[0]] + [torch.randperm(k, generator=g)[m] for m in moved[1:]])
    got = match_labels(labels, k)
    assert torch.equal(got, torch.stack(moved))                      # ids of frame 0 everywhere


def test_labels_to_masks_nearest_upsampling():
    labels = torch.tensor([[[0, 1], [2, 1]]])
    m = labels_to_masks(labels, 3, 4, 4)
    assert m.shape == (3, 1, 4, 4)
    assert m[1, 0].tolist() == [[0, 0, 1, 1]] * 4
    assert m[2, 0].tolist() == [[0, 0, 0, 0]] * 2 + [[1, 1, 0, 0]] * 2
    assert torch.equal(m.sum(0), torch.ones(1, 4, 4))


def test_name_clusters_by_cross_attention_overlap():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 2, 2]]])            # [1, 2, 4]
    masks = labels_to_masks(labels, 3, 2, 4)
    cat = torch.tensor([[[0.0, 0, 1, 1], [0, 0, 0, 0]]])
    dog = torch.tensor([[[0.0, 0, 0, 0], [0, 0, 0.2, 0.3]]])         # scaled to max 1 per frame
    assert name_clusters(masks, {"dog": dog, "cat": cat}) == ["cluster_1", "cat", "dog"]
    assert name_clusters(masks, {}) == ["cluster_1", "cluster_2", "cluster_3"]


# --- the whole chain on a deterministic feature fixture ---------------------------------------------

FRAMES, H, W, HEADS, D = 4, 12, 12, 2, 16


def scene() -> torch.Tensor:
    """Ground truth labels [F, H, W]: 0 background; 1 a block growing rightwards (12, 16, 20, 24 px);
    2 a 3x6 bar (18 px) moving down. The two objects swap size order mid-clip, so per-frame labels
    (largest first) swap too and only `match_labels` makes them consistent."""
    truth = torch.zeros(FRAMES, H, W, dtype=torch.long)
    for f in range(FRAMES):
        truth[f, 7:11, 1:4 + f] = 1
        truth[f, 1 + f:4 + f, 5:11] = 2
    return truth


def features(truth: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """q = k = α·(region one-hot per head) + noise σ = 0.3: α²/√d = 2.25 makes same-region keys ~9.5x
    likelier, while a token's own noise adds only σ²·d/√d ≈ 0.36 to its self-score. (Probe: at σ = 0.7
    the self-score, ≈ 2, rivals the region term and k-means splits by it instead; IoU falls to ~0.5.)"""
    g = torch.Generator().manual_seed(seed)
    onehot = torch.nn.functional.one_hot(truth.flatten(), D).float()            # [N, D]
    x = torch.cat([3.0 * onehot + 0.3 * torch.randn(onehot.shape, generator=g) for _ in range(HEADS)], -1)
    return x[None], (x + 0.1 * torch.randn(x.shape, generator=g))[None]


def test_automatic_regions_recover_a_moving_three_region_scene():
    truth = scene()
    acc = FrameBlockAccumulator(FRAMES, H, W, chunk_elements=4096)
    for seed in range(3):                                                   # three "steps"
        q, k = features(truth, seed)
        acc.add(q, k, HEADS)
    raw = cluster_frames(acc.mean(), 3, seed=0, size=(H, W))
    ids = [int(raw[f][truth[f] == 1].mode().values) for f in range(FRAMES)]
    assert len(set(ids)) > 1                             # unmatched, region 1's label changes mid-clip
    masks = labels_to_masks(match_labels(raw, 3), 3, 2 * H, 2 * W)       # [K, F, 2H, 2W]
    gt = labels_to_masks(truth, 3, 2 * H, 2 * W)
    # One assignment of clusters to true regions for the whole clip: labels must agree across frames.
    inter = torch.einsum("kfhw,rfhw->kr", masks, gt)
    union = masks.sum((1, 2, 3))[:, None] + gt.sum((1, 2, 3))[None] - inter
    iou = inter / union
    cols = best_assignment(iou)
    ious = [float(iou[c, r]) for c, r in enumerate(cols)]
    assert min(ious) >= 0.9, f"IoU per region {ious}"             # measured: 1.0, 1.0, 1.0
