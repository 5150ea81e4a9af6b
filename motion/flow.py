"""Forward optical flow between consecutive frames with OpenCV (docs/design.md §10, quirk 10).

The official code runs RAFT-large (downloaded at run time) on a lossy 8 fps MP4 re-read. Here the flow
comes from the in-memory frames at the processing size, with OpenCV's DIS (default) or Farneback, so
no weights and no re-encode are needed.

Flow layout everywhere in the pack: `[F-1, H, W, 2]` float32 in PIXELS, `flow[t]` maps frame t to
frame t+1 (frame t's pixel (y, x) is seen at (y + flow[t, y, x, 1], x + flow[t, y, x, 0]) in frame
t+1): channel 0 = column (x) shift, channel 1 = row (y) shift. This is also the layout that flow
computed by another node must have.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

METHODS = ("dis", "farneback")
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# Farneback settings: a 5-level pyramid (halving) reaches ~30 px shifts at 512²; 15 px windows and
# the poly_n = 5 / sigma 1.1 pair OpenCV's documentation recommends.
FARNEBACK = dict(pyr_scale=0.5, levels=5, winsize=15, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)


class FlowError(ValueError):
    """Frames or flow that cannot be used; the message names what is wrong."""


def _to_grey_uint8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """[F, H, W, 3] RGB (float 0..1 or uint8) -> [F, H, W] uint8 luma."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        frames = frames.numpy() if frames.dtype == torch.uint8 else frames.float().numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise FlowError(f"frames must be [F, H, W, 3] RGB, got shape {tuple(frames.shape)}")
    if frames.shape[0] < 2:
        raise FlowError(f"flow needs at least 2 frames, got {frames.shape[0]}")
    if frames.dtype != np.uint8:
        if not np.issubdtype(frames.dtype, np.floating):
            raise FlowError(f"frames must be float 0..1 or uint8, got dtype {frames.dtype}")
        frames = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames])


def compute_flow(frames: np.ndarray | torch.Tensor, method: str = "dis", preset: str = "medium") -> torch.Tensor:
    """Forward flow t -> t+1 of every consecutive pair: [F, H, W, 3] frames -> [F-1, H, W, 2] float32 pixels.

    method "dis" (DIS optical flow, `preset` one of DIS_PRESETS) or "farneback" (preset ignored).
    Frames are converted to 8-bit grey inside.
    """
    if method not in METHODS:
        raise FlowError(f"unknown flow method {method!r}; choose one of {', '.join(METHODS)}")
    grey = _to_grey_uint8(frames)
    if method == "dis":
        if preset not in DIS_PRESETS:
            raise FlowError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        flows = [dis.calc(grey[t], grey[t + 1], None) for t in range(len(grey) - 1)]
    else:
        flows = [cv2.calcOpticalFlowFarneback(grey[t], grey[t + 1], None, **FARNEBACK) for t in range(len(grey) - 1)]
    return torch.from_numpy(np.stack(flows).astype(np.float32, copy=False))


def validate_flow(flow, frames: int, height: int, width: int) -> torch.Tensor:
    """Check a flow for a clip of `frames` frames of height×width; return it as a float32 tensor.

    Raises FlowError naming the problem: not a tensor, wrong layout (e.g. channels-first), wrong
    frame count (must be F-1), wrong size, non-float dtype, non-finite values.
    """
    if isinstance(flow, np.ndarray):
        flow = torch.from_numpy(flow)
    if not isinstance(flow, torch.Tensor):
        raise FlowError(f"flow must be a tensor [F-1, H, W, 2], got {type(flow).__name__}")
    shape = tuple(flow.shape)
    if flow.ndim != 4 or shape[-1] != 2:
        hint = ""
        if flow.ndim == 4 and shape[1] == 2:
            hint = " (it looks channels-first [F-1, 2, H, W]; permute it to [F-1, H, W, 2])"
        raise FlowError(f"flow must have layout [F-1, H, W, 2], got shape {shape}{hint}")
    if not flow.dtype.is_floating_point:
        raise FlowError(f"flow must be floating point (pixels), got dtype {flow.dtype}")
    if shape[0] != frames - 1:
        raise FlowError(f"flow has {shape[0]} frame pairs, but a {frames}-frame clip needs {frames - 1}")
    if shape[1:3] != (height, width):
        raise FlowError(f"flow is {shape[2]}x{shape[1]} (WxH), but the frames are {width}x{height}")
    flow = flow.float()
    if not bool(torch.isfinite(flow).all()):
        raise FlowError("flow contains NaN or infinite values")
    return flow


def _robust_max(magnitude: torch.Tensor, quantile: float = 0.99) -> float:
    """The `quantile` of the magnitudes (kthvalue has no size limit, unlike torch.quantile)."""
    flat = magnitude.flatten()
    if flat.numel() == 0:
        return 1.0
    k = max(1, min(flat.numel(), int(math.ceil(quantile * flat.numel()))))
    return max(float(flat.kthvalue(k).values), 1e-6)


def _hsv_to_rgb(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Fully saturated HSV -> RGB; h in [0, 1), v in [0, 1]; returns [..., 3]."""
    h6 = h * 6.0
    sector = torch.floor(h6).long() % 6
    frac = h6 - torch.floor(h6)
    zero = torch.zeros_like(v)
    rising, falling = v * frac, v * (1.0 - frac)
    # (r, g, b) for each 60° sector of the wheel
    table = torch.stack([
        torch.stack([v, rising, zero], -1),
        torch.stack([falling, v, zero], -1),
        torch.stack([zero, v, rising], -1),
        torch.stack([zero, falling, v], -1),
        torch.stack([rising, zero, v], -1),
        torch.stack([v, zero, falling], -1),
    ], 0)
    return table.gather(0, sector[None, ..., None].expand(1, *sector.shape, 3))[0]


def flow_to_rgb(flow: torch.Tensor | np.ndarray, max_magnitude: float | None = None) -> torch.Tensor:
    """Colour preview of a flow: [F-1, H, W, 2] -> [F-1, H, W, 3] float 0..1.

    Hue = direction (red = rightwards, chartreuse = downwards, cyan = leftwards, violet = upwards), value =
    magnitude divided by `max_magnitude` (default: the clip's 99th percentile, so a few outliers do
    not darken everything), black = no motion. One scale for the whole clip, so frames compare.
    """
    flow = torch.as_tensor(flow).float()
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise FlowError(f"flow must have layout [F-1, H, W, 2], got shape {tuple(flow.shape)}")
    dx, dy = flow[..., 0], flow[..., 1]
    magnitude = torch.sqrt(dx * dx + dy * dy)
    scale = max_magnitude if max_magnitude is not None else _robust_max(magnitude)
    hue = torch.remainder(torch.atan2(dy, dx) / (2 * math.pi), 1.0)
    value = (magnitude / scale).clamp(0.0, 1.0)
    return _hsv_to_rgb(hue, value).clamp(0.0, 1.0)


@dataclass(frozen=True, eq=False)
class VideoFlow:
    """The VIDEOGRAIN_FLOW object: forward flow of one clip, `[F-1, H, W, 2]` float32 pixels (CPU).

    Layout as in the module docstring; `image_size` (H, W) is the size of the frames it was computed
    on, `method` how it was made ("dis", "farneback", or a caller's label for foreign flow).
    """

    forward: torch.Tensor
    method: str = "dis"

    def __post_init__(self):
        if not isinstance(self.forward, torch.Tensor) or self.forward.ndim != 4 or self.forward.shape[-1] != 2:
            shape = tuple(getattr(self.forward, "shape", ())) or type(self.forward).__name__
            raise FlowError(f"flow must have layout [F-1, H, W, 2], got {shape}")

    @property
    def frames(self) -> int:
        """Frames of the clip the flow belongs to (one more than its pairs)."""
        return self.forward.shape[0] + 1

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the frames the flow was computed on."""
        return int(self.forward.shape[1]), int(self.forward.shape[2])

    def __deepcopy__(self, memo):
        return self  # immutable


def clip_flow(frames, method: str = "dis", preset: str = "medium") -> VideoFlow:
    """VideoFlow of a clip [F, H, W, 3] (F ≥ 2), computed with `compute_flow`."""
    return VideoFlow(compute_flow(frames, method, preset), method)
