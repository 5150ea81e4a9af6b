"""Trajectory attention as dense attention inside packed chains (docs/design.md §10.1, "chain" layout).

With the "chain" slot layout every token's valid slots are exactly the members of its own chain, each
once (a cell belongs to one chain, a chain has at most one cell per frame). All tokens of a chain
therefore attend to the same keys, and the attention is block-diagonal over chains. Here the chains
are packed into bins of `cap` = the longest chain's length (best fit, longest chains first; a bin may
hold several short chains), the tokens are gathered into that packed order once per q, k and v, each
bin runs one small dense attention [cap × cap] with an additive mask that keeps every chain to itself
(−inf across chains), and the outputs are written back to their tokens. A masked key gets weight
exp(−inf) = 0 exactly, so the result equals the per-slot gather route up to fp32 rounding; still no
Nq×Nk matrix and at most `cap` ≤ F keys per token. Cost: three gathers of [B, N, C] instead of 2·F.

The plan (packed order, masks) is built once per `Trajectories` object and kept per device.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..motion.trajectories import Trajectories

KERNELS = ("sdpa", "matmul")


class ChainGroupError(ValueError):
    """A grouped-attention request that cannot run (unknown kernel); the message names it."""


# SDPA on fp32 inputs: one fused call per chunk (on CUDA the memory-efficient kernel, which takes fp32 and
# a mask), where the explicit matmuls need contiguous copies of q, k and v first; on a loaded 2-core CPU
# the two were within noise of each other. bench/trajectory_kernel.py times both on the GPU.
KERNEL = "sdpa"


@dataclass(frozen=True, eq=False)
class ChainPlan:
    """Packed chain order of one Trajectories on one device.

    source [P] long: token gathered into each packed position (padding reads token 0, masked anyway).
    dest [P] long: token each packed position writes back to; N at padding.
    block [bins, cap] long: chain id at each packed position, a distinct negative id at padding (a
    singleton, so no query row is left without a key); `mask` turns it into the additive mask per chunk,
    so the plan stays O(N) however long the chains.
    """

    cap: int
    bins: int
    tokens: int
    source: torch.Tensor
    dest: torch.Tensor
    block: torch.Tensor
    _flat: dict = field(init=False, default_factory=dict, repr=False)

    def flat(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, dest) [P·batch] into the rows of q.reshape(batch·N, C), position-major (p, b); padding
        writes to rows batch·N, batch·N + 1, ... of a scratch tail (each its own, so no index repeats).
        Made once per batch size."""
        if batch not in self._flat:
            shift = torch.arange(batch, device=self.source.device) * self.tokens
            source = (self.source.view(-1, 1) + shift).reshape(-1)
            dest = (self.dest.view(-1, 1) + shift).reshape(-1)
            pad = (self.dest == self.tokens).view(-1, 1).expand(-1, batch).reshape(-1)
            dest[pad] = batch * self.tokens + torch.arange(int(pad.sum()), device=dest.device)
            self._flat[batch] = (source, dest)
        return self._flat[batch]

    def mask(self, b0: int, b1: int) -> torch.Tensor:
        """Additive mask [b1 - b0, 1, cap, cap] fp32 of bins b0..b1-1: 0 within a chain, −inf across."""
        block = self.block[b0:b1]
        same = block.unsqueeze(2) == block.unsqueeze(1)
        zero = torch.zeros((), device=block.device)
        return torch.where(same, zero, float("-inf")).unsqueeze(1)

    @property
    def fill(self) -> float:
        """Fraction of packed positions holding a real token."""
        return self.tokens / (self.bins * self.cap)

    def to(self, device) -> "ChainPlan":
        """A copy with the tensors on `device`."""
        return ChainPlan(self.cap, self.bins, self.tokens, self.source.to(device), self.dest.to(device),
                         self.block.to(device))


def is_chain_partition(traj: Trajectories) -> bool:
    """True when every token's valid slots are exactly its chain's members, each once, slot 0 itself."""
    index, valid, chain = traj.index, traj.valid, traj.chain
    tokens, slots = index.shape
    if chain.shape != (tokens,) or tokens == 0 or int(chain.min()) < 0:
        return False
    own = torch.arange(tokens)
    if not bool(valid[:, 0].all()) or not torch.equal(index[:, 0], own):
        return False
    lengths = torch.bincount(chain)
    if not torch.equal(valid.sum(1), lengths[chain]):  # as many valid slots as chain members
        return False
    if not bool((chain[index] == chain.view(-1, 1))[valid].all()):  # every valid slot in the own chain
        return False
    # valid slots of a row all distinct (with the counts above: exactly the chain, once each)
    marked = torch.where(valid, index, -1 - torch.arange(slots).view(1, -1)).sort(dim=1).values
    return not bool((marked[:, 1:] == marked[:, :-1]).any())


def _pack(lengths: list[int], cap: int) -> tuple[list[int], list[int], int]:
    """Best-fit-decreasing packing of chains into bins of `cap` slots: (bin, offset) per chain, bin count.

    Chains are placed longest first; each goes into the fullest open bin it fits in, else a new bin.
    """
    by_length: dict[int, list[int]] = {}
    for c, n in enumerate(lengths):
        by_length.setdefault(n, []).append(c)
    open_bins: list[list[int]] = [[] for _ in range(cap + 1)]  # open_bins[r]: bins with r free slots
    used: list[int] = []  # slots used per bin
    bin_of, offset_of = [0] * len(lengths), [0] * len(lengths)
    for n in range(cap, 0, -1):
        queue = by_length.get(n, [])
        at = 0
        while at < len(queue):
            free = next((r for r in range(n, cap) if open_bins[r]), None)
            if free is None:
                b = len(used)
                used.append(0)
            else:
                b = open_bins[free].pop()
            # fill this bin with as many chains of this length as fit (best fit keeps choosing it)
            room = cap - used[b]
            take = min(room // n, len(queue) - at)
            for c in queue[at:at + take]:
                bin_of[c], offset_of[c] = b, used[b]
                used[b] += n
            at += take
            left = cap - used[b]
            if left:
                open_bins[left].append(b)
    return bin_of, offset_of, len(used)


def build_plan(traj: Trajectories) -> ChainPlan | None:
    """The packed plan of a "chain" Trajectories on the CPU, or None when its slots are not a chain partition."""
    if traj.layout != "chain":
        return None
    cpu = traj.to("cpu") if traj.index.device.type != "cpu" else traj
    if not is_chain_partition(cpu):
        return None
    chain = cpu.chain
    tokens = chain.numel()
    lengths = torch.bincount(chain)
    cap = int(lengths.max())
    bin_of, offset_of, bins = _pack(lengths.tolist(), cap)
    # rank of each token in its chain in time order: tokens are frame-major, so a stable sort by chain
    # lists every chain's members in frame order
    order = torch.sort(chain, stable=True).indices
    first = torch.cumsum(lengths, 0) - lengths
    rank = torch.empty(tokens, dtype=torch.long)
    rank[order] = torch.arange(tokens) - first[chain[order]]
    position = torch.tensor(bin_of)[chain] * cap + torch.tensor(offset_of)[chain] + rank
    slots = bins * cap
    source = torch.zeros(slots, dtype=torch.long)
    dest = torch.full((slots,), tokens, dtype=torch.long)
    block = -1 - torch.arange(slots)  # padding: a singleton block each (no row without a key)
    source[position] = torch.arange(tokens)
    dest[position] = torch.arange(tokens)
    block[position] = chain
    return ChainPlan(cap, bins, tokens, source, dest, block.view(bins, cap))


_PLANS: "weakref.WeakKeyDictionary[Trajectories, dict]" = weakref.WeakKeyDictionary()


def chain_plan(traj: Trajectories, device) -> ChainPlan | None:
    """`build_plan(traj)` on `device`, built once per Trajectories object and copied once per device."""
    cache = _PLANS.get(traj)
    if cache is None:
        cache = {"cpu": build_plan(traj)}
        _PLANS[traj] = cache
    key = str(torch.device(device))
    if key not in cache:
        base = cache["cpu"]
        cache[key] = None if base is None else base.to(device)
    return cache[key]


def _chunk_bins(plan: ChainPlan, batch: int, channels: int, heads: int, itemsize: int, budget: int) -> int:
    # per packed position: q/k/v gathered in the input dtype (one at a time, counted twice) and in fp32,
    # the fp32 result and its cast; scores and probabilities [heads, cap] per batch element; the mask
    per_slot = batch * (channels * (2 * itemsize + 4 * 4 + itemsize) + heads * plan.cap * 4 * 2) + plan.cap * 5
    return max(1, budget // (per_slot * plan.cap))


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, plan: ChainPlan,
                      chunk_bytes: int, kernel: str = KERNEL) -> torch.Tensor:
    """Dense attention inside each chain of `plan`: q, k, v [B, N, heads·d] -> [B, N, heads·d] in q's dtype.

    Scores, softmax and the weighted sum run in fp32 (SDPA on fp32 inputs, or explicit matmuls with
    `kernel="matmul"`); bins are processed in chunks of about `chunk_bytes` extra memory.
    """
    if kernel not in KERNELS:
        raise ChainGroupError(f"unknown grouped kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    batch, tokens, channels = q.shape
    dim, cap = channels // heads, plan.cap
    scale = 1.0 / math.sqrt(dim)
    # rows of the flat [B·N, C] inputs gathered position-major: [P, B, C], whose B and heads dims merge
    qf, kf, vf = (x.reshape(batch * tokens, channels) for x in (q, k, v))
    source, dest = plan.flat(batch)
    out = torch.empty(source.numel(), channels, dtype=q.dtype, device=q.device)  # rows past B·N: padding sink
    step = _chunk_bins(plan, batch, channels, heads, q.element_size(), chunk_bytes)
    for b0 in range(0, plan.bins, step):
        b1 = min(b0 + step, plan.bins)
        n = b1 - b0
        span = slice(b0 * cap * batch, b1 * cap * batch)
        rows = source[span]

        def packed(x):  # [n, batch·heads, cap, d] fp32, a strided view of one gathered copy
            return x.index_select(0, rows).float().view(n, cap, batch * heads, dim).transpose(1, 2)

        qp, kp, vp = packed(qf), packed(kf), packed(vf)
        bias = plan.mask(b0, b1)
        if kernel == "sdpa":
            res = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=bias, scale=scale)
        else:
            scores = torch.matmul(qp, kp.transpose(-1, -2)).mul_(scale).add_(bias)
            res = torch.matmul(scores.softmax(dim=-1), vp)
        res = res.transpose(1, 2).reshape(n * cap * batch, channels)
        out.index_copy_(0, dest[span], res.to(q.dtype))
    return out[:batch * tokens].view(batch, tokens, channels)
