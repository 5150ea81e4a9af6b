"""Any ComfyUI MASK batch as a region mask aligned with the frames (docs/design.md §2).

A MASK may come from a core mask node, the mask editor, a segmentation pack or the alpha channel of
frames, at the source video's size or at the frames' size, with one frame or one per frame, binary or
soft. `align_mask` turns every such mask into float 0/1 `[frames, out_h, out_w]` by the frames' own
sizing rule (`masks.load.plan_masks`, nearest), or refuses it with a `MaskShapeError` naming the fix.
"""
from __future__ import annotations

import torch

from .geometry import SIZE_MODES, apply_plan
from .load import MaskLoadError, plan_masks

_CHUNK = 16  # frames resized at a time: bounds the float copy of long, large masks


class MaskShapeError(ValueError):
    """A MASK that cannot line up with the frames, worded for the user: the input, the problem, the fix."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")


def align_mask(mask: torch.Tensor, frames: int, out_h: int, out_w: int, size_mode: str = "keep_aspect",
               threshold: float = 0.5, source_size: tuple[int, int] | None = None,
               input_name: str = "mask") -> torch.Tensor:
    """float32 0/1 `[frames, out_h, out_w]` from a MASK `[F, H, W]` or `[H, W]`.

    - A mask of one frame is broadcast over all `frames`; any other frame count must equal `frames`.
    - A mask of the frames' size (`out_h`×`out_w`) is used as is; any other size is taken to be the
      source video's framing and goes through the frames' sizing rule (`plan_masks`, nearest). A size
      that rule cannot have turned into the frames (another aspect ratio) is refused; `source_size`
      (the video's (w, h), when known) lets crop and pad check the aspect ratio too.
    - A pixel is in the region when its value is `> threshold` (soft masks become binary).
    Raises `MaskShapeError` (input `input_name`, or "threshold" / "size_mode").
    """
    if not 0.0 <= threshold < 1.0:
        raise MaskShapeError("threshold", f"threshold is {threshold}", "use a value from 0 up to (not including) 1")
    if size_mode not in SIZE_MODES:
        raise MaskShapeError("size_mode", f"size_mode is {size_mode!r}", f"use one of {', '.join(SIZE_MODES)}")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3:
        raise MaskShapeError(input_name, f"the mask has shape {list(mask.shape)}, not [frames, height, width]",
                             "connect a MASK output (an IMAGE needs a convert-image-to-mask node first)")
    n, h, w = mask.shape
    if n == 0 or h == 0 or w == 0:
        raise MaskShapeError(input_name, f"the mask batch is empty (shape {list(mask.shape)})",
                             "connect a mask node that outputs at least one frame")
    if n not in (1, frames):
        raise MaskShapeError(input_name, f"the mask batch has {n} frames but the video has {frames}",
                             "give one mask for every frame (the same frame selection as the video loader), "
                             "or a single mask to use on every frame")
    binary = mask.float() > threshold
    if (h, w) != (out_h, out_w):
        try:
            plan = plan_masks(w, h, size_mode, out_w, out_h, source_size)
        except MaskLoadError as err:  # same problem and fix, but this node's input name
            raise MaskShapeError(input_name, err.problem, err.fix) from err
        binary = torch.cat([apply_plan(binary[i:i + _CHUNK].float(), plan, nearest=True) > 0.5
                            for i in range(0, n, _CHUNK)])
    out = binary.float()
    return out.expand(frames, out_h, out_w).contiguous() if n == 1 else out


def alpha_to_mask(images: torch.Tensor, invert: bool = False, input_name: str = "images") -> torch.Tensor:
    """float32 `[F, H, W]`: the alpha channel of an IMAGE `[F, H, W, 4]` (opaque = region).

    `invert=True` gives 1 − alpha, which is what ComfyUI's LoadImage puts on its MASK output
    (transparent = masked), for masks painted by erasing.
    """
    if images.ndim != 4 or images.shape[-1] != 4:
        raise MaskShapeError(input_name, f"the image has shape {list(images.shape)}, without an alpha channel",
                             "give RGBA frames [frames, height, width, 4], e.g. PNGs saved with transparency")
    alpha = images[..., 3].float().clamp(0.0, 1.0)
    return 1.0 - alpha if invert else alpha
