"""Mask operations on `[F, H, W]` masks (bool or float 0..1); every function returns float32 `[F, H, W]`.

Morphology (grow, shrink) works on soft masks too (grey dilation/erosion: a max/min over the
structuring element). The topological operations (fill_holes, remove_specks) first binarise at
`> 0.5`. Region masks are never changed behind the user's back (docs/design.md §2: no implicit
dilation, erosion or blur); these are explicit tools.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

SHAPES = ("disk", "square")


def _check(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    if mask.ndim != 3:
        raise ValueError(f"{name} must be [frames, height, width], got {list(mask.shape)}")
    return mask.float()


def _disk_half_widths(radius: int) -> list[int]:
    """Row dy = -r..r of the Euclidean disk {dx² + dy² ≤ r²} spans dx in [-w(dy), w(dy)]."""
    return [math.isqrt(radius * radius - dy * dy) for dy in range(-radius, radius + 1)]


def _dilate(x: torch.Tensor, radius: int, shape: str) -> torch.Tensor:
    """Grey dilation of `[F, H, W]` by a square (side 2r+1) or a Euclidean disk of radius r.

    Both are max-pools: the square is one `max_pool2d` with a (2r+1)² window; the disk is the max over
    its rows dy of a horizontal max-pool of half-width w(dy) shifted by dy (rows with equal w share
    one pool). Outside the frame counts as 0, so dilation never grows in from the border.
    """
    if radius == 0:
        return x
    x4 = x.unsqueeze(1)
    if shape == "square":
        return F.max_pool2d(x4, 2 * radius + 1, stride=1, padding=radius).squeeze(1)
    padded = F.pad(x4, (radius,) * 4, value=0.0)              # [F, 1, H+2r, W+2r]; values are >= 0
    h, w = x.shape[1:]
    pools: dict[int, torch.Tensor] = {}
    out = None
    for i, half in enumerate(_disk_half_widths(radius)):
        if half not in pools:
            pools[half] = F.max_pool2d(padded, (1, 2 * half + 1), stride=1, padding=(0, half))
        # Row dy = i - r: output row y takes padded row y + r + dy = y + i.
        rows = pools[half][:, :, i:i + h, radius:radius + w]
        out = rows if out is None else torch.maximum(out, rows)
    return out.squeeze(1)


def _radius_and_shape(pixels: int, shape: str) -> int:
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    return int(pixels)


def grow(mask: torch.Tensor, pixels: int, shape: str = "disk") -> torch.Tensor:
    """Dilate by `pixels`: a pixel joins when some mask pixel lies within the structuring element
    (disk: Euclidean distance ≤ pixels; square: Chebyshev distance ≤ pixels)."""
    r = _radius_and_shape(pixels, shape)
    return _dilate(_check(mask), r, shape)


def shrink(mask: torch.Tensor, pixels: int, shape: str = "disk") -> torch.Tensor:
    """Erode by `pixels`: a pixel stays when every pixel of its structuring element is in the mask.

    The frame border does not count as background: a region touching the border keeps touching it.
    """
    r = _radius_and_shape(pixels, shape)
    x = _check(mask)
    # Erosion is the complement of the dilated complement; _dilate pads with 0 = "inside" here.
    return 1.0 - _dilate(1.0 - x, r, shape)


def _gaussian_kernel(radius: int, device) -> torch.Tensor:
    """Normalised 1-D Gaussian of half-width `radius` with σ = radius / 3 (±3σ inside the window)."""
    sigma = radius / 3.0
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(device=device, dtype=torch.float32)


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soft edge: separable Gaussian blur with half-width `radius` px and σ = radius/3, so the ramp
    spans about `radius` px either side of the edge. Borders are replicated (a region touching the
    frame edge stays solid there). Result in 0..1; `radius=0` returns the mask unchanged."""
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    x = _check(mask)
    if radius == 0:
        return x.clone()
    k = _gaussian_kernel(int(radius), x.device)
    x4 = x.unsqueeze(1)
    x4 = F.conv2d(F.pad(x4, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x4 = F.conv2d(F.pad(x4, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return x4.squeeze(1).clamp_(0.0, 1.0)


def _binary_frames(mask: torch.Tensor) -> np.ndarray:
    return (_check(mask) > 0.5).cpu().numpy().astype(np.uint8)


def fill_holes(mask: torch.Tensor, max_area: int | None = None) -> torch.Tensor:
    """Fill holes: background regions (4-connected) that do not touch the frame border.

    4-connected background is the dual of an 8-connected foreground, so an outline closed only
    diagonally still encloses its hole. `max_area` fills only holes of at most that many pixels.
    """
    import cv2  # opencv-python-headless; imported here to keep module import light

    frames = _binary_frames(mask)
    out = frames.copy()
    for f, fr in enumerate(frames):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - fr, connectivity=4)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        hole = np.ones(n, dtype=bool)
        hole[0] = False            # label 0 is the foreground itself
        hole[border] = False
        if max_area is not None:
            hole &= stats[:, cv2.CC_STAT_AREA] <= max_area
        out[f][hole[labels]] = 1
    return torch.from_numpy(out).float().to(mask.device)


def remove_specks(mask: torch.Tensor, min_area: int) -> torch.Tensor:
    """Drop connected pieces (8-connected) of fewer than `min_area` pixels, frame by frame."""
    import cv2

    if min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {min_area}")
    frames = _binary_frames(mask)
    out = frames.copy()
    for f, fr in enumerate(frames):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fr, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < min_area
        small[0] = False           # label 0 is the background
        out[f][small[labels]] = 0
    return torch.from_numpy(out).float().to(mask.device)


def temporal_median(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Per-pixel median over `window` (odd) frames centred on each frame; the first and last frames
    are repeated past the clip's ends, so every window is full. On binary masks this is a majority
    vote that removes flicker shorter than half the window."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number >= 1, got {window}")
    x = _check(mask)
    if window == 1:
        return x.clone()
    r, n = window // 2, x.shape[0]
    idx = (torch.arange(n)[:, None] + torch.arange(-r, r + 1)[None, :]).clamp_(0, n - 1)  # [F, window]
    return x[idx.to(x.device)].median(dim=1).values


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _check(a, "first mask"), _check(b, "second mask")
    if a.shape[1:] != b.shape[1:] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
        raise ValueError(f"masks of shape {list(a.shape)} and {list(b.shape)} do not match "
                         "(same height and width, and the same frame count or one frame)")
    return a, b


def union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixels in either mask (max; a one-frame mask is broadcast over the other's frames)."""
    a, b = _pair(a, b)
    return torch.maximum(a, b)


def intersection(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixels in both masks (min)."""
    a, b = _pair(a, b)
    return torch.minimum(a, b)


def difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pixels of `a` not in `b` (min(a, 1 − b))."""
    a, b = _pair(a, b)
    return torch.minimum(a, 1.0 - b)


def complement(masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Everything no region covers: 1 − max over `masks` (the "everything else" background region)."""
    if not masks:
        raise ValueError("complement needs at least one mask (it has no frame size otherwise)")
    cover = _check(masks[0], "mask 1")
    for i, m in enumerate(masks[1:], 2):
        _, m = _pair(cover, _check(m, f"mask {i}"))
        cover = torch.maximum(cover, m)
    return 1.0 - cover
