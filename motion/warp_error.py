"""Warp-Err: temporal consistency of an edit measured with the SOURCE clip's motion (docs/design.md §10).

For each pair (t, t+1) the edit's frame t+1 is brought onto frame t's pixel grid along the source's
forward flow f_t (cv2.remap samples frame t+1 at p + f_t(p), bilinear): for a perfectly consistent edit
the result equals frame t wherever the point is visible in both frames. This is the same alignment as
"warp frame t to t+1" (it compares the same pixel pairs), done as backward sampling so that no splatting
is needed. The per-pixel error is averaged over the RGB channels and over the pixels counted:
- visible in both: p + f_t(p) inside the frame, and, when the backward flow b_t (t+1 -> t) is given,
  forward-backward consistent: |f(p) + b(p + f(p))|² ≤ 0.01·(|f(p)|² + |b(p + f(p))|²) + 0.5
  (the occlusion test of Sundaram et al. 2010 used by the video-consistency literature);
- optionally only inside (mask ≥ 0.5) or outside a region mask, taken at frame t.

Units. The paper's Table 1 (Warp-Err 1.42 for VideoGrain, 2.82 TokenFlow, 3.08 FateZero) does not state
them, and Q-edit = CLIP-T / Warp-Err only fixes CLIP-T's scale (percent), not Warp-Err's. The usual
definition in this line of work is Lai et al. 2018's mean SQUARED error of 0..1 pixel values over the
non-occluded pixels, reported ×10⁻³ (as TokenFlow, which Table 1 compares against, reports it, to our
recollection); with that reading the table's values are RMS errors of about 10/255, plausible for
diffusion edits. So the default is error="squared" with scale 1000; error="absolute" gives the mean
absolute error of 0..1 values × `scale` instead (the wording this port was first specified with). Neither
is confirmed against the authors' evaluation script (not published). The frame value is the mean over
the counted pixels; the clip value the mean over frame pairs that count any pixel (NaN when none does).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .flow import FlowError, compute_flow, validate_flow

ERRORS = ("squared", "absolute")
REGIONS = ("all", "inside", "outside")


@dataclass(frozen=True)
class WarpError:
    """Clip value, per-pair values ([F-1], NaN where no pixel counted) and pixels counted per pair."""

    value: float
    per_frame: list[float]
    pixels: list[int]
    error: str
    scale: float


def _frames_np(frames) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.dtype == np.uint8:
        frames = frames.astype(np.float32) / 255.0
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise FlowError(f"frames must be [F, H, W, 3] RGB with F >= 2, got shape {tuple(frames.shape)}")
    return frames.astype(np.float32, copy=False)


def source_flows(source, method: str = "dis", preset: str = "medium") -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (t -> t+1) and backward (t+1 -> t) flows of the source clip, both [F-1, H, W, 2] pixels."""
    forward = compute_flow(source, method, preset)
    reversed_frames = source.flip(0) if isinstance(source, torch.Tensor) else np.ascontiguousarray(source[::-1])
    backward = compute_flow(reversed_frames, method, preset).flip(0)
    return forward, backward


def _sample(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0)


def warp_error(edit, flow, backward_flow=None, mask=None, region: str = "all", error: str = "squared",
               scale: float = 1000.0) -> WarpError:
    """Warp-Err of an edited clip [F, H, W, 3] (float 0..1 or uint8) along the source's forward flow.

    flow: source forward flow [F-1, H, W, 2] pixels; backward_flow: optional [F-1, H, W, 2] (t+1 -> t)
    for the occlusion test (without it only the in-frame test applies); mask: optional [F, H, W] region
    mask with region "inside" or "outside". See the module docstring for the exact rule and units.
    """
    if error not in ERRORS:
        raise FlowError(f"unknown error {error!r}; choose one of {', '.join(ERRORS)}")
    if region not in REGIONS:
        raise FlowError(f"unknown region {region!r}; choose one of {', '.join(REGIONS)}")
    frames = _frames_np(edit)
    count, height, width = frames.shape[:3]
    fwd = validate_flow(flow, count, height, width).cpu().numpy()
    bwd = None if backward_flow is None else validate_flow(backward_flow, count, height, width).cpu().numpy()
    region_mask = None
    if region != "all":
        if mask is None:
            raise FlowError(f"region {region!r} needs a mask")
        region_mask = torch.as_tensor(mask).detach().cpu().float().numpy()
        if region_mask.shape != (count, height, width):
            raise FlowError(f"mask must be [F, H, W] = [{count}, {height}, {width}], got {tuple(region_mask.shape)}")
        region_mask = region_mask >= 0.5 if region == "inside" else region_mask < 0.5
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    per_frame, pixels = [], []
    for t in range(count - 1):
        f = fwd[t]
        map_x, map_y = grid_x + f[..., 0], grid_y + f[..., 1]
        counted = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
        if bwd is not None:
            b = _sample(bwd[t], map_x, map_y)
            loop = ((f + b) ** 2).sum(-1)
            counted &= loop <= 0.01 * ((f ** 2).sum(-1) + (b ** 2).sum(-1)) + 0.5
        if region_mask is not None:
            counted &= region_mask[t]
        warped = _sample(frames[t + 1], map_x, map_y)
        diff = warped - frames[t]
        err = (diff ** 2 if error == "squared" else np.abs(diff)).mean(-1)
        n = int(counted.sum())
        pixels.append(n)
        per_frame.append(float(err[counted].mean()) * scale if n else float("nan"))
    counted_values = [v for v, n in zip(per_frame, pixels) if n]
    value = float(np.mean(counted_values)) if counted_values else float("nan")
    return WarpError(value, per_frame, pixels, error, scale)
