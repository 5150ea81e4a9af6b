"""Warp-Err of an edited video against its source video, from files (docs/design.md §12.1).

    python bench/video_metrics.py EDIT SOURCE [--mask MASK] [--skip 0 --nth 1] [--method dis]
    python bench/video_metrics.py --smoke          # two tiny synthetic clips, CPU, seconds

EDIT and SOURCE are video files or frame folders (media/decode.py). The edit's frames are the edited
ones; the source is selected with --skip / --nth (the loader's skip_first_frames / select_every_nth)
and capped at the edit's frame count, then resized to the edit's size when it differs (the flow must
live on the edit's pixel grid). The flow is OpenCV's (motion/flow.py) on the SOURCE frames, forward and
backward for the occlusion test; the metric is motion/warp_error.py (default: mean squared error of
0..1 values ×1000 over the pixels visible in both frames). --mask (a frame folder or a video, grey or
colour, ≥ 0.5 = inside, taken per edit frame) adds the inside and outside values.

Only Warp-Err: CLIP-T and CLIP-F need CLIP weights, which this pack never downloads; compute them in
ComfyUI with VideoGrainCLIPText / VideoGrainCLIPFrames on the models you load there.
Standalone: no ComfyUI import. Prints a table; --json writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import tempfile

import cv2
import numpy as np

PACK_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))
from pack_import import import_videograin  # noqa: E402

import_videograin()

from videograin.media.decode import iter_source_frames  # noqa: E402
from videograin.media.encode import write_mp4, write_png_frames  # noqa: E402
from videograin.media.selection import FrameSelection  # noqa: E402
from videograin.motion.flow import METHODS  # noqa: E402
from videograin.motion.warp_error import ERRORS, source_flows, warp_error  # noqa: E402


def read_frames(path: str, selection: FrameSelection = FrameSelection()) -> np.ndarray:
    """The selected frames of a video file or frame folder as uint8 [F, H, W, 3]."""
    frames = [frame.rgb() for _, frame in selection.pick(iter_source_frames(path))]
    if not frames:
        raise SystemExit(f"{path}: no frames selected ({selection.describe()})")
    return np.stack(frames)


def _resize(frames: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([cv2.resize(f, (width, height), interpolation=interpolation) for f in frames])


def measure(edit_path: str, source_path: str, mask_path: str | None = None, skip: int = 0, nth: int = 1,
            method: str = "dis", error: str = "squared", scale: float = 1000.0) -> dict:
    """Warp-Err of EDIT against SOURCE (all pixels, and inside/outside MASK when given) as a dict."""
    edit = read_frames(edit_path)
    count, height, width = edit.shape[:3]
    if count < 2:
        raise SystemExit(f"{edit_path}: Warp-Err needs at least 2 frames, got {count}")
    source = read_frames(source_path, FrameSelection(count, skip, nth))
    if source.shape[0] != count:
        raise SystemExit(f"{source_path}: {source.shape[0]} frames after skip={skip}, nth={nth}, but the edit "
                         f"has {count}")
    notes = []
    if source.shape[1:3] != (height, width):
        sh, sw = source.shape[1:3]
        if abs(sw / sh - width / height) > 0.01:
            notes.append(f"source {sw}x{sh} and edit {width}x{height} differ in aspect: the source is stretched")
        notes.append(f"source resized from {sw}x{sh} to the edit's {width}x{height}")
        source = _resize(source, height, width, cv2.INTER_AREA)
    forward, backward = source_flows(source, method)
    rows = {"all": warp_error(edit, forward, backward, error=error, scale=scale)}
    if mask_path:
        mask = read_frames(mask_path, FrameSelection(count))
        if mask.shape[0] != count:
            raise SystemExit(f"{mask_path}: {mask.shape[0]} mask frames for {count} edit frames")
        grey = _resize(mask, height, width, cv2.INTER_NEAREST).mean(-1) / 255.0
        for region in ("inside", "outside"):
            rows[region] = warp_error(edit, forward, backward, grey, region, error, scale)
    return {"edit": edit_path, "source": source_path, "mask": mask_path, "frames": count, "size": [width, height],
            "method": method, "error": error, "scale": scale, "notes": notes,
            "regions": {k: {"value": r.value, "per_frame": r.per_frame, "pixels": r.pixels} for k, r in rows.items()}}


def print_table(result: dict) -> None:
    print(f"{result['edit']} vs {result['source']}: {result['frames']} frames of {result['size'][0]}x"
          f"{result['size'][1]}, flow {result['method']}, {result['error']} error x{result['scale']:g}")
    for note in result["notes"]:
        print("note:", note)
    print("| region | Warp-Err | pairs counted | mean pixels per pair |")
    print("|---|---|---|---|")
    for region, row in result["regions"].items():
        counted = [p for p in row["pixels"] if p]
        mean_pixels = sum(counted) / len(counted) if counted else 0
        print(f"| {region} | {row['value']:.4f} | {len(counted)}/{len(row['pixels'])} | {mean_pixels:.0f} |")


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour texture (uint8 [H, W, 3]): flow finds it, and it is deterministic."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height // 4 + 1, width // 4 + 1, 3)).astype(np.float32)
    return (cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def smoke() -> list[dict]:
    """Tiny synthetic clips: a static one measured against itself (Warp-Err exactly 0, also inside and outside
    a half-frame mask), a texture panning 2 px per frame against itself (small, finite), and the panning
    clip with every other frame inverted against the panning source (more than 10x larger)."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        base = _texture(48, 96)
        static = np.stack([base[:, :64]] * 5)
        write_png_frames(str(tmp / "static"), static)
        mask = np.zeros_like(static)
        mask[:, :, :32] = 255
        write_png_frames(str(tmp / "mask"), mask)
        result = measure(str(tmp / "static"), str(tmp / "static"), str(tmp / "mask"))
        assert all(row["value"] == 0.0 for row in result["regions"].values()), result
        results.append(result)
        moving = np.stack([base[:, 2 * t:2 * t + 64] for t in range(5)])
        write_mp4(str(tmp / "moving.mp4"), moving, 8.0, crf=10)
        result = measure(str(tmp / "moving.mp4"), str(tmp / "moving.mp4"))
        assert all(math.isfinite(row["value"]) for row in result["regions"].values()), result
        results.append(result)
        flicker = moving.copy()
        flicker[1::2] = 255 - flicker[1::2]  # every other frame inverted: maximal flicker on the same motion
        write_mp4(str(tmp / "flicker.mp4"), flicker, 8.0, crf=10)
        flickering = measure(str(tmp / "flicker.mp4"), str(tmp / "moving.mp4"))
        assert flickering["regions"]["all"]["value"] > 10 * result["regions"]["all"]["value"], flickering
        results.append(flickering)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("edit", nargs="?", help="edited video file or frame folder")
    parser.add_argument("source", nargs="?", help="source video file or frame folder")
    parser.add_argument("--mask", help="region mask video or frame folder (>= 0.5 inside)")
    parser.add_argument("--skip", type=int, default=0, help="source frames skipped first (skip_first_frames)")
    parser.add_argument("--nth", type=int, default=1, help="keep every nth source frame (select_every_nth)")
    parser.add_argument("--method", choices=METHODS, default="dis", help="OpenCV flow of the source")
    parser.add_argument("--error", choices=ERRORS, default="squared")
    parser.add_argument("--scale", type=float, default=1000.0)
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--smoke", action="store_true", help="run on two tiny synthetic clips")
    args = parser.parse_args()
    if args.smoke:
        results = smoke()
    elif args.edit and args.source:
        results = [measure(args.edit, args.source, args.mask, args.skip, args.nth, args.method, args.error,
                           args.scale)]
    else:
        parser.error("give EDIT and SOURCE, or --smoke")
    for result in results:
        print_table(result)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
