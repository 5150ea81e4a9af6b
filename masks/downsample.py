"""Latent-size region masks brought down to the attention token grids (docs/design.md §2), by one of three rules.

- `nearest` (official): PyTorch `F.interpolate(..., mode="nearest")` from the latent mask, i.e. cell
  i samples latent row floor(i·H/h). A region thinner than the sampling step can lose every cell.
- `nearest_rescue` (default): exactly `nearest`, except where `nearest` leaves a region with no cell
  in a frame in which the region is non-empty at latent size: there the region gets the cell(s) of
  maximum coverage (all ties). Wherever `nearest` keeps at least one cell of a region in a frame,
  that region's mask in that frame is `nearest`'s, bit for bit.
- `area`: a cell belongs to a region when the region covers at least `AREA_FRACTION` (0.5) of the
  cell's latent pixels, with the same rescue. Closer to each region's true shape, but it differs
  from `nearest` along boundaries, so it is not the parity choice.

Coverage: cell (i, j) at an attention size (h, w) that the UNet reaches by halving with ceil
(`masks.layout.attention_sizes`) is the block of latent rows [i·s, (i+1)·s) and columns
[j·s, (j+1)·s) with s = 2^level, clipped to the latent (ceil mode: the last block of an odd size is
smaller); its coverage is the region's share of the block's *existing* latent pixels. Any other size
uses adaptive-pooling cells [floor(i·H/h), ceil((i+1)·H/h)).

With every rule a region non-empty at latent size in frame f keeps at least one cell at every size
in frame f. The area terms |R_k|/(h·w) of the attention are counted on the masks these rules give.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RULES = ("nearest_rescue", "nearest", "area")
DEFAULT_RULE = "nearest_rescue"
AREA_FRACTION = 0.5  # `area`: the least share of a cell's latent pixels that puts the cell in a region


def _stride(latent: tuple[int, int], size: tuple[int, int]) -> int | None:
    """The block size s = 2^level when `size` is the latent halved with ceil `level` times, else None."""
    s = 1
    while s < 2 * max(latent):
        if all(-(-n // s) == m for n, m in zip(latent, size)):  # m = ceil(n / s) in both dimensions
            return s
        s *= 2
    return None


def _cells(n: int, m: int, stride: int | None, device) -> torch.Tensor:
    """float [m, n]: 1 where latent row y (of n) lies in cell row i (of m): blocks of `stride` rows,
    or adaptive-pooling cells [floor(i·n/m), ceil((i+1)·n/m)) without a stride."""
    y = torch.arange(n, device=device)[None, :]
    i = torch.arange(m, device=device)[:, None]
    if stride is not None:
        return (y // stride == i).float()
    return ((y >= (i * n) // m) & (y < -(-((i + 1) * n) // m))).float()


def coverage(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float [K, F, h, w]: the share of each cell's latent pixels inside each region (masks bool [K, F, H, W])."""
    latent, size = tuple(masks.shape[2:]), (int(size[0]), int(size[1]))
    stride = _stride(latent, size)
    rows, cols = (_cells(n, m, stride, masks.device) for n, m in zip(latent, size))
    inside = torch.einsum("ih,kfhw,jw->kfij", rows, masks.float(), cols)
    return inside / (rows.sum(1)[:, None] * cols.sum(1)[None, :])


def nearest(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """bool [K, F, h, w]: PyTorch's default `nearest` resize, the official rule (docs/design.md §2)."""
    # K plays the batch, F the channels: nearest copies whole pixels, so the resize is exact.
    return F.interpolate(masks.to(torch.uint8), size=size, mode="nearest").bool()


def rescue(chosen: torch.Tensor, masks: torch.Tensor, cover: torch.Tensor) -> torch.Tensor:
    """`chosen` plus, for each (region, frame) that `chosen` leaves empty although `masks` is not,
    every cell of maximum coverage."""
    lost = ~chosen.any((2, 3)) & masks.any((2, 3))                          # [K, F]
    best = (cover == cover.amax((2, 3), keepdim=True)) & (cover > 0)
    return chosen | (best & lost[..., None, None])


def downsample(masks: torch.Tensor, size: tuple[int, int], rule: str = DEFAULT_RULE) -> torch.Tensor:
    """bool [K, F, h, w]: latent masks bool [K, F, H, W] at the token grid `size` under `rule` (see module doc)."""
    if rule not in RULES:
        raise ValueError(f"unknown downsampling rule {rule!r}; expected one of {RULES}")
    size = (int(size[0]), int(size[1]))
    if tuple(masks.shape[2:]) == size:
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, masks.shape[1], *size))
    if rule == "nearest":
        return nearest(masks, size)
    cover = coverage(masks, size)
    chosen = nearest(masks, size) if rule == "nearest_rescue" else cover >= AREA_FRACTION
    return rescue(chosen, masks, cover)
