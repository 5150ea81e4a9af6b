"""The bundled synthetic demo clip: two moving figures on a textured meadow, with exact region masks.

Everything is procedural and deterministic (integer hashing and float64 arithmetic only, no
transcendental functions whose last bits vary between maths libraries), so the same frames and masks
come out on every machine. No third-party media.

Regions (masks are exactly the pixels painted for each shape):
    figures           both figures, heads included (class level)
    left_figure       the slower figure, right_figure the faster one (instance level)
    left_figure_body  left figure minus its head; left_head its head (part level; same for right_)
    background        everything else
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, FRAMES, FPS = 512, 320, 16, 8  # non-square on purpose: exercises every sizing rule
HORIZON = 132
REGIONS = ("background", "figures", "left_figure", "left_figure_body", "left_head",
           "right_figure", "right_figure_body", "right_head")


@dataclass(frozen=True)
class Figure:
    """A stylised person: an elliptic body and a round head, walking right at `speed` px/frame."""

    name: str
    x0: float
    speed: float
    shirt: tuple[int, int, int]
    ground_y: float = 262.0
    body_rx: float = 30.0
    body_ry: float = 62.0
    head_r: float = 22.0
    bob_period: int = 8  # frames per up-down cycle of the walk


FIGURES = (
    Figure("left", x0=90.0, speed=5.0, shirt=(196, 58, 48)),
    Figure("right", x0=330.0, speed=10.0, shirt=(52, 84, 188), bob_period=4),
)


def _hash01(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) value per integer lattice point (uint32 mixing, wraps identically everywhere)."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.uint32) * np.uint32(0x27D4EB2D) ^ iy.astype(np.uint32) * np.uint32(0x165667B1)
        h = h ^ np.uint32(seed * 0x9E3779B1 & 0xFFFFFFFF)
        h = (h ^ (h >> np.uint32(15))) * np.uint32(0x2C1B3C6D)
        h = (h ^ (h >> np.uint32(12))) * np.uint32(0x297A2D39)
        h = h ^ (h >> np.uint32(15))
    return h.astype(np.float64) / 4294967296.0


def value_noise(width: int, height: int, cell: float, seed: int) -> np.ndarray:
    """Smooth noise `[height, width]` in [0, 1): lattice values every `cell` px, smoothstep-blended."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) / cell
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    c00, c10 = _hash01(ix, iy, seed), _hash01(ix + 1, iy, seed)
    c01, c11 = _hash01(ix, iy + 1, seed), _hash01(ix + 1, iy + 1, seed)
    top, bottom = c00 + (c10 - c00) * sx, c01 + (c11 - c01) * sx
    return top + (bottom - top) * sy


def fractal_noise(width: int, height: int, cells: tuple[float, ...], seed: int) -> np.ndarray:
    """Octaves of `value_noise`, halving the weight per octave, normalised to [0, 1)."""
    total, weight, norm = np.zeros((height, width)), 1.0, 0.0
    for k, cell in enumerate(cells):
        total += weight * value_noise(width, height, cell, seed + 101 * k)
        norm += weight
        weight *= 0.5
    return total / norm


def background(width: int = WIDTH, height: int = HEIGHT, seed: int = 7) -> np.ndarray:
    """Static float64 RGB `[height, width, 3]` in 0..255: cloudy sky band over a textured meadow."""
    y = np.arange(height, dtype=np.float64)[:, None, None]
    # Sky: a vertical gradient with soft clouds.
    t = np.clip(y / HORIZON, 0, 1)
    sky = np.array([84.0, 134.0, 212.0]) * (1 - t) + np.array([172.0, 204.0, 238.0]) * t
    cloud = np.clip((fractal_noise(width, height, (96, 48, 24), seed) - 0.52) * 4.0, 0, 1)[..., None]
    sky = sky * (1 - cloud) + np.array([246.0, 248.0, 252.0]) * cloud
    # Meadow: green whose brightness varies in patches and fine blades, darker towards the horizon.
    patches = fractal_noise(width, height, (80, 40), seed + 1)[..., None]
    blades = value_noise(width, height, 3.0, seed + 2)[..., None]
    depth = np.clip((y - HORIZON) / (height - HORIZON), 0, 1)
    grass = np.array([58.0, 122.0, 46.0]) * (0.72 + 0.28 * depth) * (0.75 + 0.4 * patches + 0.2 * blades)
    grass = grass + np.array([40.0, 30.0, -10.0]) * np.clip(patches - 0.6, 0, 1)  # dry, yellower patches
    return np.where(y < HORIZON, sky, grass)


def _triangle(f: int, period: int) -> float:
    """0 → 1 → 0 over `period` frames: a walk's bob without a sine."""
    phase = (f % period) / period
    return 1 - abs(2 * phase - 1)


def figure_shapes(fig: Figure, f: int, width: int = WIDTH, height: int = HEIGHT) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frame `f` of `fig`: bool body and head masks `[height, width]`, and their shading factors."""
    cx = fig.x0 + fig.speed * f
    cy = fig.ground_y - fig.body_ry - 6.0 * _triangle(f, fig.bob_period)
    hx, hy = cx, cy - fig.body_ry - fig.head_r + 8.0  # the head overlaps the shoulders a little
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5  # pixel centres
    ex, ey = (x - cx) / fig.body_rx, (y - cy) / fig.body_ry
    body = ex * ex + ey * ey <= 1.0
    dx, dy = (x - hx) / fig.head_r, (y - hy) / fig.head_r
    head = dx * dx + dy * dy <= 1.0
    # Light from the upper left: a cheap rounded look from the normalised coordinates.
    body_shade = np.clip(1.05 - 0.35 * (ex + 0.4) ** 2 - 0.1 * ey, 0.45, 1.1)
    head_shade = np.clip(1.08 - 0.3 * ((dx + 0.35) ** 2 + (dy + 0.35) ** 2), 0.5, 1.1)
    return body, head, body_shade, head_shade


@dataclass
class Clip:
    """Frames `uint8 [F, H, W, 3]`, bool masks `{region: [F, H, W]}` and the frame rate."""

    frames: np.ndarray
    masks: dict[str, np.ndarray]
    fps: int = FPS


def render_clip(frames: int = FRAMES, width: int = WIDTH, height: int = HEIGHT) -> Clip:
    """Render the demo clip and its exact region masks."""
    bg = background(width, height)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    masks = {name: np.zeros((frames, height, width), dtype=bool) for name in REGIONS}
    skin = np.array([232.0, 188.0, 150.0])
    for f in range(frames):
        img = bg.copy()
        for fig in FIGURES:
            body, head, body_shade, head_shade = figure_shapes(fig, f, width, height)
            img = np.where(body[..., None], np.array(fig.shirt, dtype=np.float64) * body_shade[..., None], img)
            img = np.where(head[..., None], skin * head_shade[..., None], img)
            masks[f"{fig.name}_head"][f] = head
            masks[f"{fig.name}_figure_body"][f] = body & ~head
            masks[f"{fig.name}_figure"][f] = body | head
        masks["figures"][f] = masks["left_figure"][f] | masks["right_figure"][f]
        masks["background"][f] = ~masks["figures"][f]
        out[f] = np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)
    return Clip(out, masks)


def write_masks(masks: dict[str, np.ndarray], folder: Path) -> None:
    """Write `folder/<region>/00000.png …` as 8-bit grey PNGs (0 or 255); same bytes on every run."""
    from PIL import Image

    for name, stack in masks.items():
        region = folder / name
        region.mkdir(parents=True, exist_ok=True)
        for f, mask in enumerate(stack):
            Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(region / f"{f:05d}.png", compress_level=9)


def write_mp4(frames: np.ndarray, path: Path, fps: int = FPS, crf: int = 20) -> None:
    """Encode `frames` as H.264 yuv420p mp4 with PyAV."""
    import av
    from fractions import Fraction

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        # One thread: x264 output then depends on nothing but the input.
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def write_demo(folder: Path) -> Clip:
    """Render the clip and write `folder/clip.mp4` and `folder/masks/<region>/*.png`."""
    clip = render_clip()
    write_mp4(clip.frames, folder / "clip.mp4", clip.fps)
    write_masks(clip.masks, folder / "masks")
    return clip
