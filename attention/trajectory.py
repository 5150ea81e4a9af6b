"""FLATTEN-style trajectory attention after the space-time attention (docs/design.md §10, §10.1).

Each token attends over its trajectory slots only (`motion.trajectories.Trajectories`): at most F keys
per token (S slots), so memory is linear in frames and no Nq×Nk matrix is ever formed. q/k are the
layer's projected q/k (or the PnP-injected ones), v is the space-time attention's output; the result
replaces that output before `to_out`. Nothing here imports ComfyUI.

Two exact routes, picked by one rule: a "chain" layout Trajectories whose slot table really is a chain
partition (checked once when its plan is built, `attention/chain_groups.py`) runs dense attention inside
packed chains; everything else ("official" layout, hand-made slot tables) gathers k and v per slot.
"""
from __future__ import annotations

import math

import torch

from ..motion.trajectories import Trajectories
from .chain_groups import chain_plan, grouped_attention
from .spacetime import split_heads

# transformer_options key of a dict (h, w) -> Trajectories: the token grids whose self-attention is
# followed by trajectory attention (set by VideoGrainTrajectoryAttention, read by attention/patch.py).
TRAJECTORIES_KEY = "videograin_trajectories"

CHUNK_BYTES = 256 * 2**20  # bound on the extra memory of one chunk of query tokens


class TrajectoryAttentionError(ValueError):
    """q/k/v that do not fit the trajectories; the message names what is wrong."""


def _chunk_tokens(batch: int, slots: int, channels: int, heads: int, itemsize: int, budget: int) -> int:
    # per query token: gathered k or v in the input dtype, its fp32 copy and the copy einsum may make
    # (k is freed before v is gathered, counted twice anyway), scores/probabilities, q and the output
    per_token = batch * slots * (channels * 2 * (itemsize + 8) + heads * 4 * 3) + batch * channels * 4 * 3
    return max(1, budget // per_token)


def attention_route(traj: Trajectories, device="cpu") -> str:
    """"grouped" for a "chain" layout whose slots are each token's chain (plan cached), else "gather"."""
    return "grouped" if chain_plan(traj, device) is not None else "gather"


def trajectory_attention(q: torch.Tensor, k: torch.Tensor, v_st: torch.Tensor, heads: int, traj: Trajectories,
                         chunk_bytes: int = CHUNK_BYTES, route: str | None = None) -> torch.Tensor:
    """Attention of every token over its trajectory slots.

    q, k, v_st: [B, F·h·w, heads·d] (B CFG branches sharing the trajectories, frame-major tokens).
    out[b, n] = Σ_s softmax_s(q[b, n]·k[b, idx[n, s]] / √d, invalid slots -∞) · v_st[b, idx[n, s]], per
    head; a slot listed twice counts twice. Scores, softmax and the weighted sum run in fp32; the result
    has q's dtype and device. Work is chunked to about `chunk_bytes` extra memory at most (an estimate
    that errs high). `route` ("grouped" or "gather") overrides `attention_route` for tests and benchmarks;
    "grouped" on a Trajectories without a chain plan raises.
    """
    if q.ndim != 3 or k.shape != q.shape or v_st.shape != q.shape:
        raise TrajectoryAttentionError(
            f"q, k and v must all be [B, N, heads*d] of one shape, got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v_st.shape)}")
    batch, tokens, channels = q.shape
    if tokens != traj.tokens:
        raise TrajectoryAttentionError(
            f"{tokens} tokens per branch do not match the trajectories' {traj.frames} frames of "
            f"{traj.size[0]}x{traj.size[1]} ({traj.tokens} tokens)")
    if channels % heads:
        raise TrajectoryAttentionError(f"channel count {channels} is not divisible by {heads} heads")
    route = route or attention_route(traj, q.device)
    if route == "grouped":
        plan = chain_plan(traj, q.device)
        if plan is None:
            raise TrajectoryAttentionError(
                "the grouped route needs a \"chain\" Trajectories whose slots are its chains")
        return grouped_attention(q, k, v_st, heads, plan, chunk_bytes)
    if route != "gather":
        raise TrajectoryAttentionError(f"unknown route {route!r}; choose grouped or gather")
    return gather_attention(q, k, v_st, heads, traj, chunk_bytes)


def gather_attention(q: torch.Tensor, k: torch.Tensor, v_st: torch.Tensor, heads: int, traj: Trajectories,
                     chunk_bytes: int = CHUNK_BYTES) -> torch.Tensor:
    """The generic route: k and v gathered per slot [B, n, S, C] for chunks of n query tokens (any slot table)."""
    batch, tokens, channels = q.shape
    dim = channels // heads
    slots = traj.span
    here = traj.on(q.device)  # copied to q's device once per Trajectories object, then reused
    index = here.index[:, :slots]
    masked = ~here.valid[:, :slots]
    step = _chunk_tokens(batch, slots, channels, heads, q.element_size(), chunk_bytes)
    scale = 1.0 / math.sqrt(dim)
    out = torch.empty_like(q)
    for start in range(0, tokens, step):
        stop = min(start + step, tokens)
        n = stop - start
        idx = index[start:stop]
        qc = split_heads(q[:, start:stop].float(), heads)                      # [B, heads, n, d]
        kg = k[:, idx].float().view(batch, n, slots, heads, dim)              # [B, n, S, heads, d]
        scores = torch.einsum("bhnd,bnshd->bhns", qc, kg) * scale
        del kg
        scores.masked_fill_(masked[start:stop].view(1, 1, n, slots), float("-inf"))
        probs = scores.softmax(dim=-1)
        del scores
        vg = v_st[:, idx].float().view(batch, n, slots, heads, dim)
        chunk = torch.einsum("bhns,bnshd->bnhd", probs, vg)
        out[:, start:stop] = chunk.reshape(batch, n, channels).to(out.dtype)
    return out
