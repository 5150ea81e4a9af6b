"""ST-Layout Attn written the plain way (docs/design.md §5.1, §5.5): materialised scores, fp32 softmax.

This is the oracle the fast path (`fast.py`) is tested against, and the route for callers that need
the probabilities themselves (the cross-attention recorder). Everything is computed in fp32 from the
inputs upcast, whatever their dtype.

Conventions shared with `fast.py`: q [B, Nq, heads·d], k/v [B, Nk, heads·d]; `q_bits` int64 [Nq] and
`k_bits` int64 [Nk] hold one bit per region a token belongs to; a pair (i, j) is positive iff
`q_bits[i] & k_bits[j] != 0`; `weight` [Nq] is w_q = λ·τ(t)·a_q, applied unclamped. Bits and weight
are shared by all B batch elements.
"""
from __future__ import annotations

import torch

from .spacetime import merge_heads, split_heads


def as_weight(weight, nq: int, device) -> torch.Tensor:
    """The per-query weight as fp32 [Nq] on `device` (a number is broadcast to every query)."""
    w = torch.as_tensor(weight, dtype=torch.float32, device=device)
    if w.dim() == 0:
        w = w.expand(nq)
    if w.shape != (nq,):
        raise ValueError(f"weight must have shape [{nq}] (one value per query), got {tuple(w.shape)}")
    return w


def check_inputs(q: torch.Tensor, k: torch.Tensor, heads: int, q_bits: torch.Tensor, k_bits: torch.Tensor) -> None:
    """Raise ValueError when shapes or bit tensors do not fit together."""
    if q.dim() != 3 or k.dim() != 3:
        raise ValueError(f"q and k must be [B, N, heads*d], got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} differ in batch or channels")
    if q.shape[2] % heads:
        raise ValueError(f"channel count {q.shape[2]} is not divisible by {heads} heads")
    for name, bits, n in (("q_bits", q_bits, q.shape[1]), ("k_bits", k_bits, k.shape[1])):
        if bits.shape != (n,):
            raise ValueError(f"{name} must have shape [{n}], got {tuple(bits.shape)}")
        if bits.dtype.is_floating_point or bits.dtype == torch.bool:
            raise ValueError(f"{name} must be an integer bit mask, got {bits.dtype}")


def positive_pairs(q_bits: torch.Tensor, k_bits: torch.Tensor) -> torch.Tensor:
    """bool [Nq, Nk]: True where query and key share at least one region."""
    return (q_bits.long()[:, None] & k_bits.long()[None, :].to(q_bits.device)) != 0


def modulated_scores(q: torch.Tensor, k: torch.Tensor, heads: int, q_bits: torch.Tensor, k_bits: torch.Tensor,
                     weight) -> torch.Tensor:
    """Transformed scores s' as fp32 [B, heads, Nq, Nk] (docs/design.md §5.5).

    s = q·k/√d; M, m = row max and min of the unmodified s over all keys;
    positive pairs move toward M by w, negative pairs toward m by w.
    """
    check_inputs(q, k, heads, q_bits, k_bits)
    qh, kh = split_heads(q, heads).float(), split_heads(k, heads).float()
    s = (qh @ kh.transpose(-1, -2)) / (qh.shape[-1] ** 0.5)
    rmax = s.amax(-1, keepdim=True)
    rmin = s.amin(-1, keepdim=True)
    w = as_weight(weight, q.shape[1], q.device)[:, None]          # [Nq, 1], broadcasts over B and heads
    pos = positive_pairs(q_bits.to(q.device), k_bits.to(q.device))
    return torch.where(pos, s + w * (rmax - s), s - w * (s - rmin))


def modulated_probs(q: torch.Tensor, k: torch.Tensor, heads: int, q_bits: torch.Tensor, k_bits: torch.Tensor,
                    weight) -> torch.Tensor:
    """fp32 [B, heads, Nq, Nk]: softmax over keys of the transformed scores."""
    return torch.softmax(modulated_scores(q, k, heads, q_bits, k_bits, weight), dim=-1)


def modulated_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                                  q_bits: torch.Tensor, k_bits: torch.Tensor, weight,
                                  query_chunk: int = 1024) -> torch.Tensor:
    """[B, Nq, heads·d] in q's dtype: modulated attention evaluated densely, `query_chunk` queries at a time.

    Peak extra memory is about B·heads·query_chunk·Nk fp32 values (a few such buffers), so the
    reference runs on long sequences; the result does not depend on the chunk size.
    """
    check_inputs(q, k, heads, q_bits, k_bits)
    if v.shape[:2] != k.shape[:2]:
        raise ValueError(f"v {tuple(v.shape)} does not match k {tuple(k.shape)}")
    if query_chunk < 1:
        raise ValueError("query_chunk must be >= 1")
    w = as_weight(weight, q.shape[1], q.device)
    q_bits, k_bits = q_bits.to(q.device), k_bits.to(q.device)
    vh = split_heads(v, heads).float()
    outs = []
    for start in range(0, q.shape[1], query_chunk):
        rows = slice(start, start + query_chunk)
        probs = modulated_probs(q[:, rows], k, heads, q_bits[rows], k_bits, w[rows])
        outs.append(probs @ vh)
        del probs
    return merge_heads(torch.cat(outs, dim=2)).to(q.dtype)
