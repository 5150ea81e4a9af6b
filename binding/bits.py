"""Region bit sets: which regions own a text token or cover a query token.

Membership is an int64 bit set, bit k = region k. Two tokens form a positive pair when their sets
intersect (`a & b != 0`), which covers overlapping masks (a part inside an instance) with one integer
per token; hence at most 63 regions (the sign bit is unused). The text side (`token_bits`) and the
pixel side (`pack_bits`, used by `masks.layout.RegionLayout.query_bits`) are encoded here, once.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_TOKENS = 77  # SD1.5 CLIP window, BOS and EOS included
MAX_REGIONS = 63  # one bit per region in an int64, sign bit unused

Span = tuple[int, int]
"""`(start, n)`: a local prompt's word tokens inside the global prompt's 77-token row."""


def token_owner(spans: Sequence[Span | None], length: int = MAX_TOKENS) -> torch.Tensor:
    """LongTensor[length]: the region index owning each text token, -1 where none does."""
    owner = torch.full((length,), -1, dtype=torch.long)
    for k, span in enumerate(spans):
        if span is None:
            continue
        start, n = span
        if start < 0 or start + n > length:
            raise ValueError(f"span {span} of region {k} lies outside {length} tokens")
        if (owner[start:start + n] >= 0).any():
            raise ValueError(f"region {k} claims tokens already owned by another region")
        owner[start:start + n] = k
    return owner


def token_bits(spans: Sequence[Span | None], length: int = MAX_TOKENS) -> torch.Tensor:
    """LongTensor[length]: bit k set where region k owns the token (0 = unowned)."""
    if len(spans) > MAX_REGIONS:
        raise ValueError(f"at most {MAX_REGIONS} regions, got {len(spans)}")
    owner = token_owner(spans, length)
    bits = torch.zeros(length, dtype=torch.long)
    owned = owner >= 0
    bits[owned] = torch.ones_like(owner[owned]) << owner[owned]
    return bits


def pack_bits(members: torch.Tensor) -> torch.Tensor:
    """int64 [...]: bit k set where `members[k]` is true; `members` is bool/int [K, ...] with K ≤ 63."""
    k = members.shape[0]
    if k > MAX_REGIONS:
        raise ValueError(f"at most {MAX_REGIONS} regions, got {k}")
    if k == 0:
        return torch.zeros(members.shape[1:], dtype=torch.long, device=members.device)
    shifts = torch.arange(k, device=members.device, dtype=torch.long).reshape((k,) + (1,) * (members.ndim - 1))
    return (members.long() << shifts).sum(0)
