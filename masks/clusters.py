"""Automatic regions from the model's own self-attention (docs/design.md §10, "Automatic masks by clustering").

The inversion's full space-time self-attention (§7) is recorded at the 32×32-equivalent level: for
every query, the probabilities on its own frame's keys (the frame's hw×hw diagonal block of the
F·hw × F·hw map), averaged over heads, calls and steps. The softmax still runs over ALL F·hw keys; only
the diagonal block is kept, so each row's log-sum-exp is taken over all keys and exp(s − LSE) is
evaluated on the frame's own keys (`FrameBlockAccumulator`). Rows of that [F, hw, hw] affinity are
clustered per frame with k-means (`cluster_frames`), labels are made consistent across frames
(`match_labels`) and become masks (`labels_to_masks`); clusters can be named by their overlap with the
cross-attention maps of nouns the user types (`name_clusters`).
"""
from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..attention.spacetime import merge_heads, spacetime_attention, split_heads

_log = logging.getLogger(__name__)

# Upper bound on the fp32 score elements one query chunk materialises (64 MiB), as in attention/extrema.py.
_CHUNK_ELEMENTS = 1 << 24
BRUTE_FORCE_MAX = 7  # optimal assignment by trying all permutations up to 7 (5 040); greedy above


class ClusterError(ValueError):
    """A clustering request that cannot be met, e.g. more clusters than tokens."""


def fused_attention_lse(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor,
                        scale: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(out `[B, H, N, d]`, natural-log LSE fp32 `[B, H, N]` of scale·q·kᵀ) from one fused attention
    kernel, or None where this torch has none. CUDA fp16/bf16: cuDNN attention (on an H200 at 16 frames
    of 32×32 it costs 1.71 ms against 1.58 ms for plain SDPA; flash attention with LSE 2.58 ms), else
    flash attention; CPU: the blocked flash kernel. These are private aten ops, hence the guarded
    calls; callers check the LSE."""
    ops = torch.ops.aten
    if qh.is_cuda and qh.dtype in (torch.float16, torch.bfloat16):
        calls = (lambda: ops._scaled_dot_product_cudnn_attention(qh, kh, vh, None, True, 0.0, False, False,
                                                                 scale=scale),
                 lambda: ops._scaled_dot_product_flash_attention(qh, kh, vh, 0.0, False, False, scale=scale))
    elif qh.device.type == "cpu":
        calls = (lambda: ops._scaled_dot_product_flash_attention_for_cpu(qh, kh, vh, 0.0, False, scale=scale),)
    else:
        return None
    for call in calls:
        try:
            res = call()
        except (AttributeError, RuntimeError, TypeError, NotImplementedError):
            continue
        out, lse = res[0], res[1]
        if out.shape == qh.shape and lse.numel() == qh.shape[0] * qh.shape[1] * qh.shape[2]:
            return out, lse.reshape(qh.shape[:3]).float()
    return None


class FrameBlockAccumulator:
    """Sum of the heads-averaged per-frame diagonal blocks of space-time self-attention.

    `frames`, `h`, `w`: the clip and the token grid of the recorded level. Each batch entry of a call
    is one CFG branch holding all F frames; per branch, `mean over heads of softmax(q·kᵀ/√d)` restricted
    to each frame's own keys is added. Two ways in:

    - `attend(q, k, v, heads)` replaces the plain attention call: one fused kernel gives the output
      and every row's log-sum-exp over all keys, and only the F diagonal blocks of scores are formed
      again (1/F of the full QKᵀ work). Its LSE is checked on a few rows at the first call; where the
      fused kernel is missing or disagrees, it falls back to plain attention plus `add`.
    - `add(q, k, heads, lse=None)`: from q, k alone; without `lse` each query chunk's scores over all
      keys give its LSE (about one more QKᵀ).

    Memory: the `[F, hw, hw]` float32 sum (4 MiB per frame at 32×32) plus one chunk of scores of at
    most `chunk_elements` floats; no F·hw × F·hw matrix is formed. Measured on an H200 (fp16, 8 heads
    of 80, 32×32): one `attend` costs 1.36 / 2.53 / 8.52 ms at 8 / 16 / 32 frames against plain
    attention's 0.50 / 1.67 / 7.03 ms (+0.87 / +0.87 / +1.49 ms); `add` without an LSE costs ~30 ms at 16.
    """

    def __init__(self, frames: int, h: int, w: int, device=None, chunk_elements: int = _CHUNK_ELEMENTS):
        if frames < 1 or h < 1 or w < 1:
            raise ValueError(f"frames, h, w must be positive, got {frames}, {h}, {w}")
        self.frames, self.h, self.w = frames, h, w
        self.chunk_elements = int(chunk_elements)
        self.sum = torch.zeros((frames, h * w, h * w), dtype=torch.float32, device=device)
        self.calls = 0  # branches added (each call adds B)
        self.fused: bool | None = None  # whether attend() uses the fused LSE; None until its first call

    @property
    def tokens(self) -> int:
        return self.frames * self.h * self.w

    def _heads(self, q: torch.Tensor, k: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        if q.ndim != 3 or k.shape != q.shape:
            raise ValueError(f"q and k must both be [B, F·h·w, heads·d], got {list(q.shape)} and {list(k.shape)}")
        n = q.shape[1]
        if n != self.tokens:
            raise ValueError(f"got {n} tokens but {self.frames} frames of {self.h}x{self.w} make {self.tokens}")
        if self.sum.device != q.device:
            self.sum = self.sum.to(q.device)
        return split_heads(q, heads), split_heads(k.to(q.dtype), heads), 1.0 / math.sqrt(q.shape[2] // heads)

    @torch.no_grad()
    def add(self, q: torch.Tensor, k: torch.Tensor, heads: int, lse: torch.Tensor | None = None) -> None:
        """Accumulate one call from q, k `[B, F·h·w, heads·d]`; `lse` `[B, heads, F·h·w]` (natural log,
        of the scaled scores over all keys) when the attention kernel already produced it."""
        qh, kh, scale = self._heads(q, k, heads)
        if lse is None:
            self._add_with_lse(qh, kh, scale)
        else:
            if lse.shape != qh.shape[:3]:
                raise ValueError(f"lse must be {list(qh.shape[:3])}, got {list(lse.shape)}")
            self._add_blocks(qh, kh, lse.float(), scale)
        self.calls += q.shape[0]

    def _add_with_lse(self, qh: torch.Tensor, kh: torch.Tensor, scale: float) -> None:
        b, heads, n, _ = qh.shape
        hw = self.h * self.w
        chunk = max(1, min(hw, self.chunk_elements // max(1, heads * n)))
        for bi in range(b):
            # Matmuls in q's dtype (fp16 on GPU: tensor cores); LSE and exp in fp32. The 1/√d scale is
            # folded into q, which saves a pass over these scores.
            qs, kt = qh[bi] * scale, kh[bi].transpose(-1, -2)                 # [heads, N, d], [heads, d, N]
            for f in range(self.frames):
                base = f * hw
                for start in range(0, hw, chunk):
                    stop = min(hw, start + chunk)
                    s = (qs[:, base + start:base + stop] @ kt).float()       # [heads, c, N]
                    lse = torch.logsumexp(s, dim=-1, keepdim=True)
                    self.sum[f, start:stop] += torch.exp(s[:, :, base:base + hw] - lse).mean(0)
                    del s

    def _add_blocks(self, qh: torch.Tensor, kh: torch.Tensor, lse: torch.Tensor, scale: float) -> None:
        b, heads, _, _ = qh.shape
        hw = self.h * self.w
        chunk = max(1, min(hw, self.chunk_elements // max(1, heads * hw)))
        # fp16 inputs stay fp16 (cuBLAS adds −LSE in its fp32 epilogue and rounds once: ≤ ~1 % relative
        # error on a probability, 1.3 ms instead of 2.0 ms in fp32 at 16 frames of 32×32 on an H200);
        # anything else (bf16 has too few mantissa bits for s − LSE) is computed in fp32.
        work = torch.float16 if qh.dtype == torch.float16 else torch.float32
        for bi in range(b):
            neg_lse = (-lse[bi]).to(work)                                          # [heads, N]
            for f in range(self.frames):
                base = f * hw
                kt = kh[bi, :, base:base + hw].to(work).transpose(-1, -2)       # own frame's keys only
                for start in range(base, base + hw, chunk):
                    stop = min(base + hw, start + chunk)
                    # One GEMM gives scale·q·kᵀ − LSE on the frame's own keys (1/F of the scores).
                    s = torch.baddbmm(neg_lse[:, start:stop, None], qh[bi, :, start:stop].to(work), kt, alpha=scale)
                    self.sum[f, start - base:stop - base].add_(s.exp_().sum(0, dtype=torch.float32), alpha=1 / heads)
                    del s

    def _fused_ok(self, qh: torch.Tensor, kh: torch.Tensor, lse: torch.Tensor, scale: float) -> bool:
        """Compare the fused LSE with logsumexp of fp32 scores on the first rows of each frame."""
        hw = self.h * self.w
        rows = torch.arange(0, qh.shape[2], hw, device=qh.device)[:, None] + torch.arange(min(hw, 4), device=qh.device)
        rows = rows.flatten()
        ref = torch.logsumexp((qh[0][:, rows].float() @ kh[0].float().transpose(-1, -2)) * scale, -1)
        tol = 1e-4 if qh.dtype == torch.float32 else 2e-2
        return bool(torch.isfinite(lse).all()) and float((ref - lse[0][:, rows]).abs().max()) <= tol

    @torch.no_grad()
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        """Plain attention `[B, N, heads·d]` over all keys (as `spacetime_attention`), recording the blocks."""
        qh, kh, scale = self._heads(q, k, heads)
        if self.fused is not False:
            res = fused_attention_lse(qh, kh, split_heads(v.to(q.dtype), heads), scale)
            if res is not None and self.fused is None:
                self.fused = self._fused_ok(qh, kh, res[1], scale)
                if not self.fused:
                    _log.warning("automatic masks: the fused attention kernel's log-sum-exp disagrees with the "
                                 "scores here; recording with the slower chunked path instead")
            elif res is None:
                self.fused = False
            if self.fused:
                out, lse = res
                self._add_blocks(qh, kh, lse, scale)
                self.calls += q.shape[0]
                return merge_heads(out)
        out = spacetime_attention(q, k, v, heads)
        self.add(q, k, heads)
        return out

    def mean(self) -> torch.Tensor:
        """float32 `[F, hw, hw]`: the average over every added branch (raises before any call)."""
        if self.calls == 0:
            raise ValueError("no self-attention call was recorded")
        return self.sum / self.calls

    def __deepcopy__(self, memo):
        return self  # travels in transformer_options, which ComfyUI deep-copies on every clone


# --- k-means --------------------------------------------------------------------------------------

def _kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: first centre uniform, then each next with probability ∝ squared distance."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct rows than k: any row will do
            idx = int(torch.randint(n, (1,), generator=gen))
        else:
            idx = int(torch.multinomial((d2 / total).cpu(), 1, generator=gen))
        centres.append(x[idx])
        d2 = torch.minimum(d2, ((x - x[idx]) ** 2).sum(1))
    return torch.stack(centres)


def _lloyd(x: torch.Tensor, centres: torch.Tensor, iters: int) -> tuple[torch.Tensor, float]:
    """Lloyd iterations from `centres`; an emptied cluster takes the row farthest from its centre."""
    x2 = (x * x).sum(1, keepdim=True)
    labels = None
    for _ in range(iters):
        dist = x2 - 2 * x @ centres.T + (centres * centres).sum(1)[None]
        new = dist.argmin(1)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=len(centres))
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        centres = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = int(dist.gather(1, labels[:, None]).argmax())
            centres[j] = x[far]
    dist = x2 - 2 * x @ centres.T + (centres * centres).sum(1)[None]
    best, labels = dist.min(1)
    return labels, float(best.clamp(min=0).sum())


def _by_size(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Renumber clusters largest first (ties: the one whose first pixel comes first in raster order)."""
    counts = torch.bincount(labels, minlength=k)
    first = torch.full((k,), labels.numel(), dtype=torch.long)
    first.scatter_reduce_(0, labels, torch.arange(labels.numel()), reduce="amin")
    order = sorted(range(k), key=lambda j: (-int(counts[j]), int(first[j])))
    rank = torch.empty(k, dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(k)
    return rank[labels]


def kmeans(x: torch.Tensor, k: int, gen: torch.Generator, n_init: int = 10, iters: int = 100) -> torch.Tensor:
    """Labels `[N]` of the best (lowest inertia) of `n_init` k-means++ seeded Lloyd runs on rows `x [N, D]`."""
    best_labels, best_inertia = None, math.inf
    for _ in range(n_init):
        labels, inertia = _lloyd(x, _kmeans_pp(x, k, gen), iters)
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def cluster_frames(affinity: torch.Tensor, k: int, seed: int = 0, n_init: int = 10, iters: int = 100,
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """LongTensor `[F, h, w]`: k-means (k-means++ init from a `torch.Generator` seeded with `seed`,
    best of `n_init`) on the hw rows of each frame's affinity `[F, hw, hw]`, computed on the CPU in
    float32. Per frame, label 0 is the largest cluster. `size=(h, w)` defaults to a square grid.
    Raises `ClusterError` when k < 1 or k > hw."""
    if affinity.ndim != 3 or affinity.shape[1] != affinity.shape[2]:
        raise ValueError(f"affinity must be [F, hw, hw], got {list(affinity.shape)}")
    n_f, hw, _ = affinity.shape
    if size is None:
        side = math.isqrt(hw)
        if side * side != hw:
            raise ValueError(f"{hw} tokens per frame is not a square grid; pass size=(h, w)")
        size = (side, side)
    if size[0] * size[1] != hw:
        raise ValueError(f"size {size} does not hold {hw} tokens")
    if not 1 <= k <= hw:
        raise ClusterError(f"{k} clusters asked for, but a frame has {hw} tokens at {size[1]}x{size[0]}; "
                           f"use 1 to {hw} clusters")
    if n_init < 1 or iters < 1:
        raise ValueError(f"n_init and iters must be >= 1, got {n_init}, {iters}")
    gen = torch.Generator().manual_seed(int(seed))
    x = affinity.detach().float().cpu()
    labels = torch.stack([_by_size(kmeans(x[f], k, gen, n_init, iters), k) for f in range(n_f)])
    return labels.reshape(n_f, *size)


# --- consistent labels across frames ---------------------------------------------------------------

def best_assignment(score: torch.Tensor) -> list[int]:
    """`col[i]` for each row i of `score [R, C]` (R ≤ C) maximising the total score, one column each.

    Optimal by trying every assignment when max(R, C) ≤ BRUTE_FORCE_MAX; otherwise greedy (take the
    highest remaining entry, repeatedly), which can miss the optimum on close calls.
    """
    r, c = score.shape
    if r > c:
        raise ValueError(f"more rows ({r}) than columns ({c})")
    s = score.double().cpu()
    if c <= BRUTE_FORCE_MAX:
        perms = torch.tensor(list(itertools.permutations(range(c), r)), dtype=torch.long)   # [P, R]
        totals = s[torch.arange(r)[None], perms].sum(1)
        return perms[int(totals.argmax())].tolist()
    out, s = [-1] * r, s.clone()
    for _ in range(r):
        i, j = divmod(int(s.argmax()), c)
        out[i] = j
        s[i, :] = -math.inf
        s[:, j] = -math.inf
    return out


def _iou(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """`[k, k]` IoU between the clusters of label maps a (rows) and b (columns)."""
    oa = F.one_hot(a.flatten(), k).double()
    ob = F.one_hot(b.flatten(), k).double()
    inter = oa.T @ ob
    return inter / (oa.sum(0)[:, None] + ob.sum(0)[None] - inter).clamp(min=1)


def match_labels(labels: torch.Tensor, k: int) -> torch.Tensor:
    """Relabel `[F, h, w]` so cluster j means the same region in every frame: frame 0 is kept, each
    next frame's clusters are matched to the previous (relabelled) frame's by maximum total IoU
    (`best_assignment`: optimal up to k = 7, greedy above)."""
    if labels.ndim != 3:
        raise ValueError(f"labels must be [F, h, w], got {list(labels.shape)}")
    out = labels.clone()
    for f in range(1, labels.shape[0]):
        cols = best_assignment(_iou(labels[f], out[f - 1], k))
        out[f] = torch.tensor(cols, dtype=labels.dtype, device=labels.device)[labels[f]]
    return out


# --- masks and names --------------------------------------------------------------------------------

def labels_to_masks(labels: torch.Tensor, k: int, out_h: int, out_w: int) -> torch.Tensor:
    """float32 0/1 `[K, F, out_h, out_w]`: cluster j's mask, upsampled with PyTorch's `nearest`
    (integer factors, as from the 32×32 level to the frames, replicate whole cells)."""
    onehot = F.one_hot(labels.long(), k).permute(3, 0, 1, 2).float()       # [K, F, h, w]
    return F.interpolate(onehot, size=(out_h, out_w), mode="nearest")


def noun_scores(masks: torch.Tensor, cross_maps: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """`[K, N]`: the mean of noun n's cross-attention map (per frame scaled to max 1, resized
    bilinearly to the masks' size) over cluster k's pixels in all frames. A mean, not a sum, so that
    large clusters do not win by size."""
    n_k, n_f, h, w = masks.shape
    cols = []
    for name, m in cross_maps.items():
        if m.ndim != 3 or m.shape[0] != n_f:
            raise ValueError(f"cross-attention map '{name}' must be [{n_f}, h, w], got {list(m.shape)}")
        m = m.float().to(masks.device)
        m = m / m.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        m = F.interpolate(m[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        cols.append((masks * m).sum((1, 2, 3)) / masks.sum((1, 2, 3)).clamp(min=1))
    return torch.stack(cols, 1) if cols else masks.new_zeros((n_k, 0))


def name_clusters(masks: torch.Tensor, cross_maps: Mapping[str, torch.Tensor],
                  unnamed: str = "cluster_{}") -> list[str]:
    """Names for the K clusters `[K, F, H, W]`: nouns are assigned one-to-one to clusters by maximum
    total `noun_scores` (`best_assignment`); clusters left over are named `unnamed.format(j + 1)`."""
    n_k = masks.shape[0]
    nouns = list(cross_maps)
    names = [unnamed.format(j + 1) for j in range(n_k)]
    if not nouns:
        return names
    score = noun_scores(masks, cross_maps)                 # [K, N]
    if len(nouns) <= n_k:
        for n, j in enumerate(best_assignment(score.T)):
            names[j] = nouns[n]
    else:
        for j, n in enumerate(best_assignment(score)):
            names[j] = nouns[n]
    return names


def regions_from_affinity(affinity: torch.Tensor, size: tuple[int, int], k: int, out_h: int, out_w: int,
                          seed: int = 0, n_init: int = 10) -> torch.Tensor:
    """The whole chain: cluster each frame, match labels across frames, masks `[K, F, out_h, out_w]`."""
    labels = match_labels(cluster_frames(affinity, k, seed, n_init, size=size), k)
    return labels_to_masks(labels, k, out_h, out_w)

