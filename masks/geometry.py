"""Frame geometry: one sizing rule applied identically to video frames and region masks.

The research code resizes frames and masks separately and silently misaligns them; here a
`FramePlan` is computed once from the source size and applied to every tensor that must line up.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SIZE_MODES = ("keep_aspect", "crop", "pad")
MULTIPLE = 64  # SD1.5 downsamples the 1/8 latent three more times: pixel sides must be multiples of 64


@dataclass(frozen=True)
class FramePlan:
    """Resize to (resize_w, resize_h), then crop or pad to (out_w, out_h).

    `offset_x/offset_y` is where the resized frame's top-left lands in the output: negative when
    cropping (the frame is larger), positive when padding, zero for keep_aspect.
    """

    mode: str
    src_w: int
    src_h: int
    resize_w: int
    resize_h: int
    out_w: int
    out_h: int
    offset_x: int
    offset_y: int


def _snap(v: float, multiple: int = MULTIPLE) -> int:
    return max(multiple, int(v / multiple + 0.5) * multiple)  # half rounds up, not to even


def plan_frames(src_w: int, src_h: int, mode: str = "keep_aspect", width: int = 512, height: int = 512) -> FramePlan:
    """Plan how a `src_w`×`src_h` frame becomes a model-ready frame.

    keep_aspect: scale to fit inside width×height (0 = unconstrained side; both 0 = source size),
        then round each side to the nearest multiple of 64 (aspect changes by at most 32 px a side;
        nothing is cropped).
    crop: scale to cover width×height and centre-crop to it.
    pad: scale to fit inside width×height and centre-pad with zeros.
    For crop and pad, width and height are snapped to multiples of 64 first.
    """
    if mode not in SIZE_MODES:
        raise ValueError(f"size_mode must be one of {SIZE_MODES}, got {mode!r}")
    if src_w <= 0 or src_h <= 0:
        raise ValueError(f"source size must be positive, got {src_w}x{src_h}")
    if width < 0 or height < 0:
        raise ValueError(f"width and height must be >= 0, got {width}x{height}")
    if mode == "keep_aspect":
        scales = [s for s in (width / src_w if width else 0.0, height / src_h if height else 0.0) if s > 0]
        scale = min(scales) if scales else 1.0
        out_w, out_h = _snap(src_w * scale), _snap(src_h * scale)
        return FramePlan(mode, src_w, src_h, out_w, out_h, out_w, out_h, 0, 0)
    if width == 0 or height == 0:
        raise ValueError(f"size_mode {mode!r} needs both width and height (got {width}x{height})")
    out_w, out_h = _snap(width), _snap(height)
    pick = max if mode == "crop" else min
    scale = pick(out_w / src_w, out_h / src_h)
    resize_w, resize_h = max(1, round(src_w * scale)), max(1, round(src_h * scale))
    return FramePlan(mode, src_w, src_h, resize_w, resize_h, out_w, out_h,
                     (out_w - resize_w) // 2, (out_h - resize_h) // 2)


def apply_plan(frames: torch.Tensor, plan: FramePlan, nearest: bool = False) -> torch.Tensor:
    """Apply `plan` to channel-last frames `[F, H, W, C]` (IMAGE) or masks `[F, H, W]` (MASK).

    Frames use antialiased bilinear resizing; masks pass `nearest=True` so labels stay crisp.
    """
    squeeze = frames.ndim == 3
    x = frames.unsqueeze(-1) if squeeze else frames
    if x.shape[1:3] != (plan.src_h, plan.src_w):
        raise ValueError(f"expected frames of {plan.src_w}x{plan.src_h}, got {x.shape[2]}x{x.shape[1]}")
    x = x.movedim(-1, 1).float()
    if (plan.resize_h, plan.resize_w) != (plan.src_h, plan.src_w):
        if nearest:
            x = F.interpolate(x, size=(plan.resize_h, plan.resize_w), mode="nearest-exact")
        else:
            x = F.interpolate(x, size=(plan.resize_h, plan.resize_w), mode="bilinear",
                              align_corners=False, antialias=True).clamp_(0.0, 1.0)
    out = x.new_zeros((x.shape[0], x.shape[1], plan.out_h, plan.out_w))
    # Intersection of the resized frame (placed at offset) with the output canvas.
    ox, oy = plan.offset_x, plan.offset_y
    dst_x0, dst_y0 = max(ox, 0), max(oy, 0)
    src_x0, src_y0 = max(-ox, 0), max(-oy, 0)
    w = min(plan.out_w - dst_x0, plan.resize_w - src_x0)
    h = min(plan.out_h - dst_y0, plan.resize_h - src_y0)
    out[:, :, dst_y0:dst_y0 + h, dst_x0:dst_x0 + w] = x[:, :, src_y0:src_y0 + h, src_x0:src_x0 + w]
    out = out.movedim(1, -1)
    return out.squeeze(-1) if squeeze else out
