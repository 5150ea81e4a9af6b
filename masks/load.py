"""Region masks from disk, aligned with the loaded frames.

Two sources are read:

(a) a folder with one subfolder per region (subfolder name = region name), one image per frame,
    files sorted naturally ("2.png" before "10.png"); a pixel belongs to the region when its grey
    value (0..1) is above `threshold`;
(b) a colour-coded label video, or a folder of label frames: one flat colour per region, black for
    "no region". Names come from an optional `colors.txt` (lines `name: #rrggbb`) in the label folder
    or beside the video as `<video stem>.colors.txt`; otherwise regions are found by colour and named
    `region_1`, `region_2`, … in order of colour value.

Frames are picked with the video loader's rule (`media.selection.FrameSelection`) and decoded by the
same code (`media.decode`, rotation included), then every mask goes through the
same `FramePlan` as the frames (`masks.geometry`), nearest-neighbour, so masks line up with the frames
exactly. Every problem raises `MaskLoadError`, which names the input to change and the fix.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import torch

from ..media.decode import MediaReadError, iter_source_frames, read_grey, read_rgb
from ..media.files import VIDEO_EXTENSIONS, list_frame_files, list_subfolders, natural_key
from ..media.selection import FrameSelection
from .geometry import SIZE_MODES, FramePlan, apply_plan, plan_frames

ASPECT_TOLERANCE = 0.01  # masks and frames may differ by rounding, not by a different framing
LABEL_TOLERANCE = 48  # max per-channel distance of a label pixel to its colour (lossy video shifts colours)
LABEL_MIN_SHARE = 0.001  # colours rarer than this are compression noise when no colors.txt is given
MAX_LABEL_COLOURS = 64
_CHUNK = 16  # frames resized at a time: bounds the float32 copy for long, large masks


class MaskLoadError(ValueError):
    """A problem with the masks, worded for the user: which input to change and how."""

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")


def _images_in(folder: Path) -> list[Path]:
    return [Path(f) for f in list_frame_files(folder)]


def _region_dirs(folder: Path) -> list[Path]:
    return [Path(d) for d in list_subfolders(folder)]


# --- reading --------------------------------------------------------------------------------------

def _read_grey(path: Path) -> np.ndarray:
    """One mask image as float32 grey 0..1 (8- and 16-bit PNGs, RGB images via luminance)."""
    try:
        return read_grey(str(path))
    except MediaReadError as err:
        raise MaskLoadError("masks_path", f"cannot read mask image {path} ({err.__cause__ or err})",
                            "replace it with a valid PNG/JPEG image") from err


def _read_rgb(path: Path) -> np.ndarray:
    try:
        return read_rgb(str(path))
    except MediaReadError as err:
        raise MaskLoadError("masks_path", f"cannot read label image {path} ({err.__cause__ or err})",
                            "replace it with a valid PNG image") from err


def _check_size(path: Path, shape: tuple[int, ...], size: tuple[int, int] | None, first: Path | None) -> tuple[int, int]:
    h, w = shape[:2]
    if size is not None and (w, h) != size:
        raise MaskLoadError("masks_path", f"mask image {path} is {w}x{h} but {first} is {size[0]}x{size[1]}",
                            "give every mask image of every region the same size")
    return (w, h)


def _missing_hint(counts: dict[str, list[Path]]) -> str:
    """Name the files one region has and another lacks, compared by file stem."""
    fullest = max(counts, key=lambda n: len(counts[n]))
    stems = {p.stem for p in counts[fullest]}
    for name, files in counts.items():
        lacking = sorted(stems - {p.stem for p in files}, key=natural_key)
        if lacking:
            shown = ", ".join(lacking[:3]) + (" …" if len(lacking) > 3 else "")
            return f"; '{name}' lacks {shown} (present in '{fullest}')"
    return ""


def read_region_folders(root: Path, selection: FrameSelection, threshold: float
                        ) -> tuple[dict[str, np.ndarray], tuple[int, int], dict[str, float]]:
    """Read layout (a). Returns bool masks `{region: [F, h, w]}`, the masks' (w, h), and each region's
    highest grey value over the selected frames (to tell "empty" from "threshold too high")."""
    files = {d.name: _images_in(d) for d in _region_dirs(root)}
    if not any(files.values()):
        raise MaskLoadError("masks_path", f"{root} has no region subfolders with images",
                            "put one subfolder per region in it, each holding one image per frame")
    lengths = {name: len(f) for name, f in files.items()}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"'{n}': {c}" for n, c in lengths.items())
        raise MaskLoadError("masks_path", f"the regions have different frame counts ({listing}){_missing_hint(files)}",
                            "give every region subfolder one mask image per frame (an empty frame is an all-black image)")
    total = next(iter(lengths.values()))
    indices = selection.indices(total)
    if not indices:
        raise MaskLoadError("skip_first_frames", f"{selection.describe()} selects none of the {total} mask frames",
                            "use the same frame selection as the video loader, with skip_first_frames below the frame count")
    masks, peaks, size, first = {}, {}, None, None
    for name, paths in files.items():
        stack, peak = [], 0.0
        for i in indices:
            grey = _read_grey(paths[i])
            size = _check_size(paths[i], grey.shape, size, first)
            first = first or paths[i]
            peak = max(peak, float(grey.max()))
            stack.append(grey > threshold)
        masks[name], peaks[name] = np.stack(stack), peak
    return masks, size, peaks


def read_colour_table(path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """Parse a `colors.txt`: one `name: #rrggbb` a line; blank lines are skipped."""
    table, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*([^:]+?)\s*:\s*#?([0-9a-fA-F]{6})\s*", line)
        if not m:
            raise MaskLoadError("masks_path", f"{path} line {n} reads {line.strip()!r}",
                                "write one region a line as 'name: #rrggbb'")
        name, hexa = m.group(1), m.group(2)
        rgb = (int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16))
        if name in seen:
            raise MaskLoadError("masks_path", f"{path} names region '{name}' twice", "give each region one line")
        if rgb == (0, 0, 0):
            raise MaskLoadError("masks_path", f"{path} gives region '{name}' black, which means 'no region'",
                                "pick another colour for it")
        seen.add(name)
        table.append((name, rgb))
    if not table:
        raise MaskLoadError("masks_path", f"{path} lists no regions", "write one region a line as 'name: #rrggbb'")
    return table


def _iter_video_rgb(path: Path):
    """The label video's frames as lazy RGB loaders, upright (display rotation applied, as for the clip)."""
    try:
        for frame in iter_source_frames(str(path)):
            yield frame
    except MediaReadError as err:
        raise MaskLoadError("masks_path", f"cannot decode label video {path} ({err})",
                            "give a readable video file (mp4, webm, mkv, mov, gif) or a mask folder") from err


def read_label_frames(path: Path, selection: FrameSelection) -> tuple[list[np.ndarray], Path | None]:
    """Selected RGB label frames of layout (b), and the `colors.txt` that names them (or None)."""
    if path.is_dir():
        files = _images_in(path)
        if not files:
            raise MaskLoadError("masks_path", f"{path} holds no images and no region subfolders",
                                "point masks_path at a folder of region subfolders, of label frames, or at a label video")
        frames, size = [], None
        for _, f in selection.pick(files):
            rgb = _read_rgb(f)
            size = _check_size(f, rgb.shape, size, files[0])
            frames.append(rgb)
        table = path / "colors.txt"
    else:
        frames = [frame.rgb() for _, frame in selection.pick(_iter_video_rgb(path))]
        table = path.with_name(path.stem + ".colors.txt")
    if not frames:
        raise MaskLoadError("skip_first_frames", f"{selection.describe()} selects none of the label frames in {path}",
                            "use the same frame selection as the video loader, with skip_first_frames below the frame count")
    return frames, (table if table.is_file() else None)


def discover_colours(frames: list[np.ndarray]) -> list[tuple[int, int, int]]:
    """The flat label colours of `frames` (black excluded), most common first, merging colours closer
    than `LABEL_TOLERANCE` and ignoring colours rarer than `LABEL_MIN_SHARE` (compression fringes)."""
    packed = [(f[..., 0].astype(np.int64) << 16 | f[..., 1].astype(np.int64) << 8 | f[..., 2]).ravel() for f in frames]
    values, counts = np.unique(np.concatenate(packed), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    floor = LABEL_MIN_SHARE * counts.sum()
    palette: list[tuple[int, int, int]] = [(0, 0, 0)]
    for v, c in zip(values[order], counts[order]):
        if c < floor:
            break
        rgb = (int(v >> 16) & 255, int(v >> 8) & 255, int(v) & 255)
        if all(max(abs(a - b) for a, b in zip(rgb, p)) > LABEL_TOLERANCE for p in palette):
            palette.append(rgb)
            if len(palette) > MAX_LABEL_COLOURS + 1:
                raise MaskLoadError("masks_path", f"the label frames hold more than {MAX_LABEL_COLOURS} distinct colours",
                                    "give flat-coloured label frames (one colour per region, black elsewhere) "
                                    "or a folder with one subfolder per region")
    return sorted(palette[1:])


def split_labels(frames: list[np.ndarray], colours: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """One bool stack `[F, h, w]` per colour: each pixel goes to the nearest colour (black included)
    within `LABEL_TOLERANCE`; pixels near no colour belong to no region."""
    palette = np.array([(0, 0, 0)] + list(colours), dtype=np.int16)
    out = [np.zeros((len(frames),) + frames[0].shape[:2], dtype=bool) for _ in colours]
    for fi, frame in enumerate(frames):
        dist = np.abs(frame.astype(np.int16)[:, :, None, :] - palette[None, None]).max(axis=-1)
        nearest = dist.argmin(axis=-1)
        near = np.take_along_axis(dist, nearest[..., None], axis=-1)[..., 0] <= LABEL_TOLERANCE
        for k in range(len(colours)):
            out[k][fi] = near & (nearest == k + 1)
    return out


def read_label_source(path: Path, selection: FrameSelection) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    """Read layout (b) into bool masks `{region: [F, h, w]}` and the masks' (w, h)."""
    frames, table_path = read_label_frames(path, selection)
    if table_path is not None:
        table = read_colour_table(table_path)
    else:
        table = [(f"region_{i}", rgb) for i, rgb in enumerate(discover_colours(frames), 1)]
        if not table:
            raise MaskLoadError("masks_path", f"the label frames in {path} are black everywhere (no region)",
                                "paint each region in its own colour, or give a mask folder")
    stacks = split_labels(frames, [rgb for _, rgb in table])
    h, w = frames[0].shape[:2]
    return {name: s for (name, _), s in zip(table, stacks)}, (w, h)


# --- alignment ------------------------------------------------------------------------------------

def _keep_aspect_fits(mask_w: int, mask_h: int, out_w: int, out_h: int, slack: float) -> bool:
    """Could keep_aspect have turned a frame shaped like the masks into out_w x out_h? It scales the
    source and rounds each side to a multiple of 64 (±32 px), so some scale must land both sides there."""
    def span(src: int, out: int) -> tuple[float, float]:
        lo = 0.0 if out <= 64 else (out - 32) / src
        return lo * (1 - slack), (out + 32) / src * (1 + slack)

    (a, b), (c, d) = span(mask_w, out_w), span(mask_h, out_h)
    return max(a, c) < min(b, d)


def plan_masks(mask_w: int, mask_h: int, size_mode: str, out_w: int, out_h: int,
               source_size: tuple[int, int] | None = None) -> FramePlan:
    """The plan that takes masks of `mask_w`x`mask_h` to frames of `out_w`x`out_h` sized by `size_mode`.

    keep_aspect stretches the source straight to the frames' snapped size (no crop), so the masks are
    resized straight to `out_w`x`out_h` too. crop and pad use `plan_frames` with the frames' size as the
    box, which gives the frames' scale-and-centre rule for masks of the source's aspect ratio.
    `source_size` (the video's own size, when known) lets crop and pad check that aspect ratio.
    """
    if size_mode not in SIZE_MODES:
        raise MaskLoadError("size_mode", f"size_mode is {size_mode!r}", f"use one of {', '.join(SIZE_MODES)}")
    aspect = mask_w / mask_h
    if source_size is not None and source_size[0] > 0 and source_size[1] > 0:
        src_aspect = source_size[0] / source_size[1]
        if abs(aspect / src_aspect - 1) > ASPECT_TOLERANCE:
            raise MaskLoadError("masks_path", f"the masks are {mask_w}x{mask_h} (aspect {aspect:.3f}) but the video is "
                                f"{source_size[0]}x{source_size[1]} (aspect {src_aspect:.3f}), so they cannot line up",
                                "make the masks from the same video, at its size or scaled without cropping")
    plan = plan_frames(mask_w, mask_h, size_mode, out_w, out_h)
    if size_mode == "keep_aspect":
        if source_size is None and not _keep_aspect_fits(mask_w, mask_h, out_w, out_h, ASPECT_TOLERANCE):
            raise MaskLoadError("masks_path", f"the masks are {mask_w}x{mask_h} (aspect {aspect:.3f}), which keep_aspect "
                                f"cannot turn into the frames' {out_w}x{out_h}",
                                "make the masks from the same video, at its size or scaled without cropping")
        plan = dataclasses.replace(plan, resize_w=out_w, resize_h=out_h, out_w=out_w, out_h=out_h,
                                   offset_x=0, offset_y=0)
    return plan


def _resize(stack: np.ndarray, plan: FramePlan) -> torch.Tensor:
    parts = [apply_plan(torch.from_numpy(stack[i:i + _CHUNK]).float(), plan, nearest=True)
             for i in range(0, len(stack), _CHUNK)]
    return torch.cat(parts).clamp_(0.0, 1.0)


def _check_coverage(name: str, before: np.ndarray, after: torch.Tensor, peak: float | None,
                    threshold: float, plan: FramePlan) -> None:
    if not before.any():
        if peak is not None and peak > 0:
            raise MaskLoadError("threshold", f"region '{name}' is empty in every selected frame: its brightest "
                                f"pixel is {peak:.2f}, not above threshold {threshold:.2f}",
                                f"lower threshold below {peak:.2f}, or fix the mask images")
        raise MaskLoadError("masks_path", f"region '{name}' is empty in every selected frame",
                            "remove the region, or select the frames where it appears")
    if not bool(after.any()):
        raise MaskLoadError("size_mode", f"region '{name}' lies entirely in the part that {plan.mode} cuts away",
                            "use size_mode pad or keep_aspect, or a larger width/height on the video loader")
    # A region covering everything is accepted, as from any other mask source; masks/layout.build_layout
    # warns about it (the one rule for all-covering masks).


def load_region_masks(path: str | Path, frame_count: int, out_w: int, out_h: int, size_mode: str = "keep_aspect",
                      selection: FrameSelection = FrameSelection(), threshold: float = 0.5,
                      source_size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
    """Load region masks aligned with `frame_count` frames of `out_w`x`out_h` sized by `size_mode`.

    Returns `{region name: float32 [F, H, W] of 0/1}` in region order. Raises `MaskLoadError`.
    """
    path = Path(path)
    if not 0.0 <= threshold < 1.0:
        raise MaskLoadError("threshold", f"threshold is {threshold}", "use a value from 0 up to (not including) 1")
    if not path.exists():
        raise MaskLoadError("masks_path", f"{path} does not exist",
                            "give a folder or label video inside ComfyUI's input folder, or an absolute path")
    peaks: dict[str, float] = {}
    if path.is_dir() and any(_images_in(d) for d in _region_dirs(path)):
        masks, (mask_w, mask_h), peaks = read_region_folders(path, selection, threshold)
    elif path.is_dir() or path.suffix.lower() in VIDEO_EXTENSIONS:
        masks, (mask_w, mask_h) = read_label_source(path, selection)
    else:
        raise MaskLoadError("masks_path", f"{path} is neither a folder nor a video ({path.suffix or 'no extension'})",
                            "give a folder of region subfolders or label frames, or a label video")
    got = len(next(iter(masks.values())))
    if got != frame_count:
        raise MaskLoadError("masks_path", f"the masks give {got} frames after frame selection ({selection.describe()}) "
                            f"but the images have {frame_count}",
                            "use the video loader's frame_load_cap, skip_first_frames and select_every_nth here, "
                            "with masks for every frame of the video")
    plan = plan_masks(mask_w, mask_h, size_mode, out_w, out_h, source_size)
    out: dict[str, torch.Tensor] = {}
    for name, stack in masks.items():
        out[name] = _resize(stack, plan)
        _check_coverage(name, stack, out[name], peaks.get(name), threshold, plan)
    return out
