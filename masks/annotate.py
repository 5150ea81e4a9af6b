"""The mask check's overlay video: `preview.overlay` plus each region's name and the frame number.

A region's name is written at its most interior pixel (the one farthest from the mask's edge, by
OpenCV's distance transform), so it sits inside the region even for rings and crescents; in frames
where the region is empty no name is drawn. Labels sit on a box of the region's colour, so they read on any frame.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from .preview import overlay, region_colours


def _label(img: np.ndarray, text: str, centre: tuple[int, int], scale: float,
           colour: tuple[int, int, int]) -> None:
    """`text` on a filled box of `colour` centred at `centre` (kept inside the frame), in black or
    white, whichever contrasts more with the box."""
    import cv2

    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    h, w = img.shape[:2]
    x = min(max(centre[0] - tw // 2, 2), max(2, w - tw - 2))
    y = min(max(centre[1] + th // 2, th + 2), h - base - 2)
    cv2.rectangle(img, (x - 2, y - th - 2), (x + tw + 2, y + base), colour, -1)
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if luma > 140 else (255, 255, 255)
    cv2.putText(img, text, (x, y), font, scale, ink, thick, cv2.LINE_AA)


def interior_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the pixel of a bool `[H, W]` mask farthest from its edge, or None when empty."""
    import cv2

    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.uint8), 1)  # the frame border counts as an edge
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def annotate_frames(frames: torch.Tensor, masks: Mapping[str, torch.Tensor], names: bool = True,
                    frame_numbers: bool = True, threshold: float = 0.5) -> torch.Tensor:
    """Draw region names (in their overlay colours) and "frame i" (0-based) on IMAGE `[F, H, W, 3]` frames."""
    if frames.ndim != 4 or frames.shape[-1] < 3:
        raise ValueError(f"frames must be IMAGE [F, H, W, 3], got {list(frames.shape)}")
    n, h, _ = frames.shape[:3]
    img = (frames[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy().copy()
    scale = max(0.35, h / 640)
    colours = [tuple(int(255 * c) for c in rgb) for rgb in region_colours(len(masks)).tolist()]
    binary = [(m.float() > threshold).cpu().numpy() for m in masks.values()]
    for f in range(n):
        if names:
            for name, mask, colour in zip(masks, binary, colours):
                point = interior_point(mask[min(f, len(mask) - 1)])
                if point is None:
                    continue
                _label(img[f], name, point, scale, colour)
        if frame_numbers:  # 0-based, as in the coverage table and the box keyframes
            _label(img[f], f"frame {f}", (0, h), scale, (0, 0, 0))
    return torch.from_numpy(img).float().div_(255.0).to(frames.device)


def annotated_overlay(images: torch.Tensor, masks: Mapping[str, torch.Tensor], opacity: float = 0.5) -> torch.Tensor:
    """The mask check video: regions tinted and outlined (`preview.overlay`), named, frames numbered."""
    return annotate_frames(overlay(images, dict(masks), opacity), masks)
