"""Region masks from boxes with keyframes, for users coming from box-grounded editors.

Format (JSON object; region order is the order of the keys):

    {
      "units": "pixels",                                   # optional: "pixels" or "fraction"
      "left_figure":  {"0": [60, 120, 130, 300], "15": [130, 120, 200, 300]},
      "right_figure": {"0": [300, 110, 370, 300], "8": [380, 110, 450, 300]},
      "sky":          [0, 0, 512, 100]                     # one box for every frame
    }

- A box is `[x0, y0, x1, y1]`: left, top, right, bottom edges, with x1 > x0 and y1 > y0. Pixel
  (x, y) is inside when its centre lies in the box: x0 ≤ x + 0.5 < x1 and y0 ≤ y + 0.5 < y1, so
  integer pixel boxes select exactly `mask[y0:y1, x0:x1]`. Boxes may reach past the frame (objects
  entering or leaving); what lies outside is cut off.
- Units: "pixels" of the output frames (or of the source frames when a `FramePlan` is given, see
  `boxes_to_masks`), or "fraction" of the frame's width and height (0..1). Without a "units" key the
  rule is: fraction when every coordinate of every box is within 0..1, else pixels.
- Keyframes: keys are frame indices 0..F−1 (decimal strings, as JSON keys must be strings). Between two
  keyframes each coordinate is linearly interpolated; frames before the first keyframe or after the
  last hold the nearest keyframe's box.
"""
from __future__ import annotations

import json
import math

import torch

from .geometry import FramePlan

UNITS = ("pixels", "fraction")
_FIX_FORMAT = ('write {"region": {"<frame>": [x0, y0, x1, y1], ...}, ...}, '
               'e.g. {"cat": {"0": [10, 20, 110, 220], "15": [60, 20, 160, 220]}}')


class BoxesError(ValueError):
    """Box JSON that cannot become masks: what is wrong (`problem`) and how to fix it (`fix`)."""

    def __init__(self, problem: str, fix: str, input_name: str = "boxes"):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise BoxesError(f"the key {key!r} appears twice in the same object", "give each region and each frame once")
        seen[key] = value
    return seen


def _box(region: str, where: str, value) -> list[float]:
    if (not isinstance(value, list) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise BoxesError(f"region '{region}' {where}: {json.dumps(value)} is not four numbers",
                         "write each box as [x0, y0, x1, y1] (left, top, right, bottom)")
    box = [float(v) for v in value]
    if not all(math.isfinite(v) for v in box):
        raise BoxesError(f"region '{region}' {where}: {value} holds a non-finite number", "use finite numbers")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise BoxesError(f"region '{region}' {where}: box {value} has x1 <= x0 or y1 <= y0",
                         "write the box as [left, top, right, bottom] with right > left and bottom > top")
    return box


def parse_boxes(text: str, frames: int) -> tuple[dict[str, dict[int, list[float]]], str]:
    """Parse and check the JSON: `({region: {frame: [x0, y0, x1, y1]}}, units)`. Raises `BoxesError`."""
    if frames < 1:
        raise BoxesError(f"the video has {frames} frames", "give boxes for a video with at least one frame")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as err:
        raise BoxesError(f"the text is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})",
                         _FIX_FORMAT) from err
    if not isinstance(data, dict):
        raise BoxesError(f"the JSON is a {type(data).__name__}, not an object of regions", _FIX_FORMAT)
    units = data.pop("units", None)
    if units is not None and units not in UNITS:
        raise BoxesError(f'"units" is {json.dumps(units)}', 'use "pixels" or "fraction", or leave "units" out')
    if not data:
        raise BoxesError("the JSON names no region", _FIX_FORMAT)
    regions: dict[str, dict[int, list[float]]] = {}
    for name, value in data.items():
        if not name.strip():
            raise BoxesError("a region has an empty name", "give every region a name")
        if isinstance(value, list):
            regions[name] = {0: _box(name, "(all frames)", value)}
            continue
        if not isinstance(value, dict) or not value:
            raise BoxesError(f"region '{name}' is {json.dumps(value)}, not keyframes or one box", _FIX_FORMAT)
        keys: dict[int, list[float]] = {}
        for key, box in value.items():
            if not key.strip().lstrip("-").isdigit():
                raise BoxesError(f"region '{name}' has the keyframe {key!r}, which is not a frame number",
                                 f"use frame numbers 0 to {frames - 1} as keys")
            f = int(key)
            if not 0 <= f < frames:
                raise BoxesError(f"region '{name}' has a box for frame {f}, but the video has frames 0 to {frames - 1}",
                                 f"use frame numbers 0 to {frames - 1} (the frames after frame selection)")
            if f in keys:
                raise BoxesError(f"region '{name}' gives frame {f} twice", "give each keyframe once")
            keys[f] = _box(name, f"frame {f}", box)
        regions[name] = dict(sorted(keys.items()))
    values = [v for keys in regions.values() for box in keys.values() for v in box]
    if units is None:
        units = "fraction" if all(0.0 <= v <= 1.0 for v in values) else "pixels"
    elif units == "fraction" and not all(0.0 <= v <= 1.0 for v in values):
        raise BoxesError('"units" is "fraction" but some coordinates lie outside 0..1',
                         'give fractions of the frame size from 0 to 1, or use "units": "pixels"')
    return regions, units


def interpolate(keys: dict[int, list[float]], frames: int) -> torch.Tensor:
    """float64 `[frames, 4]`: boxes linearly interpolated between keyframes, held before/after them."""
    idx = sorted(keys)
    kf = torch.tensor(idx, dtype=torch.float64)
    kb = torch.tensor([keys[i] for i in idx], dtype=torch.float64)   # [K, 4]
    t = torch.arange(frames, dtype=torch.float64).clamp(kf[0], kf[-1])
    hi = torch.searchsorted(kf, t, right=False).clamp(1, len(idx) - 1) if len(idx) > 1 else None
    if hi is None:
        return kb.expand(frames, 4).clone()
    lo = hi - 1
    a = ((t - kf[lo]) / (kf[hi] - kf[lo]))[:, None]
    return kb[lo] * (1 - a) + kb[hi] * a


def box_mask(boxes: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """float32 0/1 `[F, out_h, out_w]` of pixel-unit boxes `[F, 4]` by the pixel-centre rule."""
    xs = torch.arange(out_w, dtype=torch.float64) + 0.5
    ys = torch.arange(out_h, dtype=torch.float64) + 0.5
    inx = (xs[None] >= boxes[:, 0:1]) & (xs[None] < boxes[:, 2:3])   # [F, W]
    iny = (ys[None] >= boxes[:, 1:2]) & (ys[None] < boxes[:, 3:4])   # [F, H]
    return (iny[:, :, None] & inx[:, None, :]).float()


def boxes_to_masks(text: str, frames: int, out_h: int, out_w: int,
                   plan: FramePlan | None = None) -> dict[str, torch.Tensor]:
    """Region masks `{name: float32 0/1 [frames, out_h, out_w]}` in JSON order from box JSON (module doc).

    Without `plan`, pixel boxes are in the output frames' pixels and fractions of `out_w`×`out_h`.
    With `plan` (the frames' `FramePlan`), boxes are in the source video's pixels (or fractions of
    it) and are moved through the same resize and crop/pad as the frames, so boxes drawn on the
    original video line up. Raises `BoxesError`.
    """
    regions, units = parse_boxes(text, frames)
    if plan is not None and (plan.out_w, plan.out_h) != (out_w, out_h):
        raise ValueError(f"plan gives {plan.out_w}x{plan.out_h} frames but out size is {out_w}x{out_h}")
    ref_w, ref_h = (plan.src_w, plan.src_h) if plan is not None else (out_w, out_h)
    out: dict[str, torch.Tensor] = {}
    for name, keys in regions.items():
        b = interpolate(keys, frames)
        if units == "fraction":
            b = b * torch.tensor([ref_w, ref_h, ref_w, ref_h], dtype=torch.float64)
        if plan is not None:
            sx, sy = plan.resize_w / plan.src_w, plan.resize_h / plan.src_h
            b = b * torch.tensor([sx, sy, sx, sy], dtype=torch.float64) + torch.tensor(
                [plan.offset_x, plan.offset_y, plan.offset_x, plan.offset_y], dtype=torch.float64)
        out[name] = box_mask(b, out_h, out_w)
    return out
