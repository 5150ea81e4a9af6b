"""Pictures of region masks for checking them by eye: a colour label image and a tinted overlay."""
from __future__ import annotations

import torch
import torch.nn.functional as F

GOLDEN = 0.6180339887498949  # hue step: consecutive regions get far-apart hues


def region_colours(n: int) -> torch.Tensor:
    """`[n, 3]` distinct, saturated RGB colours in 0..1 (hues spaced by the golden ratio)."""
    out = []
    for i in range(n):
        h = (0.02 + i * GOLDEN) % 1.0 * 6.0
        s, v = 0.85, 0.95
        sector, frac = int(h), h - int(h)
        p, q, t = v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))
        out.append([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][sector % 6])
    return torch.tensor(out, dtype=torch.float32).reshape(n, 3)


def _stack(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    if not masks:
        raise ValueError("no region masks")
    shapes = {tuple(m.shape) for m in masks.values()}
    if len(shapes) != 1:
        raise ValueError(f"region masks differ in shape: {sorted(shapes)}")
    return torch.stack([m.float().clamp(0, 1) for m in masks.values()])  # [R, F, H, W]


def label_image(masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """IMAGE `[F, H, W, 3]`: each region in its colour on black; overlapping regions average."""
    m = _stack(masks)
    colours = region_colours(len(m)).to(m.device)
    total = torch.einsum("rfhw,rc->fhwc", m, colours)
    count = m.sum(0).unsqueeze(-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))


def outline(mask: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Bool `[F, H, W]`: pixels of `mask` within `width` px of its edge (frame borders excepted)."""
    inside = mask > 0.5
    outside = (~inside).float().unsqueeze(1)
    # Pad with "inside" so a region touching the frame border gets no line along the border.
    near_outside = F.max_pool2d(F.pad(outside, (width,) * 4, value=0.0), 2 * width + 1, stride=1)
    return inside & (near_outside.squeeze(1) > 0)


def overlay(images: torch.Tensor, masks: dict[str, torch.Tensor], opacity: float = 0.5) -> torch.Tensor:
    """Tint each region of `images` `[F, H, W, 3]` with its colour at `opacity`, then draw its outline
    at full strength, in region order (later regions on top)."""
    m = _stack(masks)
    if m.shape[1:] != images.shape[:3]:
        raise ValueError(f"masks are {tuple(m.shape[1:])} (frames, height, width) but images are {tuple(images.shape[:3])}")
    out = images[..., :3].float().clone()
    colours = region_colours(len(m)).to(out.device)
    for mask, colour in zip(m, colours):
        a = (mask * opacity).unsqueeze(-1)
        out = out * (1 - a) + colour * a
        out[outline(mask)] = colour
    return out.clamp_(0, 1)


def heat_colours(values: torch.Tensor) -> torch.Tensor:
    """[N, H, W] in 0..1 → [N, H, W, 3] black→red→yellow→white heat colours."""
    v = values.clamp(0, 1)[..., None]
    return torch.cat([(v * 3).clamp(0, 1), (v * 3 - 1).clamp(0, 1), (v * 3 - 2).clamp(0, 1)], dim=-1)
