"""Plain (unmodulated) attention over a whole sequence: the floor every modulated call is measured against.

Full space-time self-attention (docs/design.md §7) is this function applied to the F·h·w tokens of one CFG
branch; unmodulated cross-attention is the same call with the 77 text keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, heads·d] -> [B, heads, N, d] (a view where possible)."""
    b, n, c = x.shape
    if c % heads:
        raise ValueError(f"channel count {c} is not divisible by {heads} heads")
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads·d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def spacetime_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain attention over the whole sequence.

    q [B, Nq, heads·d], k/v [B, Nk, heads·d] -> [B, Nq, heads·d] in q's dtype. Uses torch SDPA, which
    picks the flash / memory-efficient kernels on GPU (and the blocked flash kernel on CPU), so no
    Nq×Nk matrix is kept.
    """
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    if v.dtype != q.dtype:
        v = v.to(q.dtype)
    out = F.scaled_dot_product_attention(split_heads(q, heads), split_heads(k, heads), split_heads(v, heads))
    return merge_heads(out)
