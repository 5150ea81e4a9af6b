"""The region check, before any GPU time: per-region, per-frame coverage (table, text, plot), warnings
about the pixel masks, and how many attention cells each region of a layout owns at each level.

Warnings never stop a run; they name the region, the frames and what to look at. The attention-grid
checks resize exactly as the layout does (docs/design.md §2, §19: pixels → latent with `nearest`,
latent → each attention size by the downsampling rule of `masks.downsample`, as `RegionLayout.masks_at`).

A region that is non-empty at latent size in a frame but owns no cell at a modulated level in that
frame cannot pull its prompt there: its tokens are negative for every pixel, so the prompt is pushed
down everywhere. Under `nearest` that happens to thin parts; the other rules rescue such regions, and
the report says where they had to.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .downsample import DEFAULT_RULE, downsample, nearest
from .layout import RegionLayout, attention_sizes
from .preview import region_colours

NO_REGION = "(no region)"


@dataclass(frozen=True)
class Coverage:
    """`share[r, f]`: the share of frame f's pixels in region r; `uncovered[f]`: share in no region."""

    names: list[str]
    share: torch.Tensor      # float64 [R, F]
    uncovered: torch.Tensor  # float64 [F]

    @property
    def frames(self) -> int:
        return self.uncovered.shape[0]


def _binary(masks: Mapping[str, torch.Tensor], threshold: float) -> torch.Tensor:
    """bool `[R, F, H, W]` of the masks `> threshold`; all masks must share one shape."""
    if not masks:
        raise ValueError("no region masks to check")
    shapes = {tuple(m.shape) for m in masks.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"region masks must all be [F, H, W] of one shape, got {sorted(shapes)}")
    return torch.stack([m.float() > threshold for m in masks.values()])


def coverage_table(masks: Mapping[str, torch.Tensor], threshold: float = 0.5) -> Coverage:
    """Coverage of each region (pixels `> threshold`) in each frame, and of no region."""
    b = _binary(masks, threshold)
    pixels = b.shape[2] * b.shape[3]
    share = b.flatten(2).sum(-1).double() / pixels
    uncovered = (~b.any(0)).flatten(1).sum(-1).double() / pixels
    return Coverage(list(masks), share.cpu(), uncovered.cpu())


def coverage_text(cov: Coverage) -> str:
    """The table as text: one line per frame, one column per region plus "(no region)", in percent."""
    names = cov.names + [NO_REGION]
    cols = torch.cat([cov.share, cov.uncovered[None]]).T.tolist()   # [F, R+1]
    widths = [max(len(n), 7) for n in names]
    head = "frame | " + " | ".join(n.rjust(w) for n, w in zip(names, widths))
    lines = [head, "-" * len(head)]
    for f, row in enumerate(cols):
        lines.append(f"{f:5d} | " + " | ".join(f"{100 * v:6.2f}%".rjust(w) for v, w in zip(row, widths)))
    return "\n".join(lines)


def coverage_plot(cov: Coverage, height: int = 360, width: int = 640) -> torch.Tensor:
    """IMAGE `[1, height, width, 3]`: one line per region (its overlay colour) of share over frames,
    "(no region)" in grey, with a legend; drawn with OpenCV on a white canvas."""
    import cv2  # opencv-python-headless

    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 56, 170, 16, 40
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    series = cov.share.tolist() + [cov.uncovered.tolist()]
    colours = [tuple(int(255 * c) for c in rgb) for rgb in region_colours(len(cov.names)).tolist()] + [(128, 128, 128)]
    peak = max(max(s) for s in series)
    ymax = max(0.1, float(np.ceil(peak * 10 - 1e-9)) / 10)
    n = cov.frames
    font, small = cv2.FONT_HERSHEY_SIMPLEX, 0.4

    def px(f: int, v: float) -> tuple[int, int]:
        x = x0 + (x1 - x0) * (f / (n - 1) if n > 1 else 0.5)
        return int(round(x)), int(round(y1 - (y1 - y0) * v / ymax))

    for i in range(6):  # horizontal grid with percent labels
        v = ymax * i / 5
        y = px(0, v)[1]
        cv2.line(img, (x0, y), (x1, y), (225, 225, 225), 1)
        cv2.putText(img, f"{100 * v:.0f}%", (4, y + 4), font, small, (60, 60, 60), 1, cv2.LINE_AA)
    step = max(1, int(np.ceil(n / 16)))
    for f in range(0, n, step):  # frame ticks
        x = px(f, 0)[0]
        cv2.line(img, (x, y1), (x, y1 + 4), (60, 60, 60), 1)
        cv2.putText(img, str(f), (x - 4, y1 + 16), font, small, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.putText(img, "frame", ((x0 + x1) // 2 - 18, height - 6), font, small, (60, 60, 60), 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), (60, 60, 60), 1)
    for k, (values, colour) in enumerate(zip(series, colours)):
        pts = np.array([px(f, v) for f, v in enumerate(values)], np.int32)
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, (int(p[0]), int(p[1])), 2, colour, -1, cv2.LINE_AA)
        ly = y0 + 6 + 16 * k
        if ly < height - 4:  # legend
            cv2.rectangle(img, (x1 + 10, ly - 5), (x1 + 22, ly + 5), colour, -1)
            name = (cov.names + [NO_REGION])[k]
            cv2.putText(img, name[:20], (x1 + 28, ly + 4), font, small, (30, 30, 30), 1, cv2.LINE_AA)
    return torch.from_numpy(img).float().div_(255.0)[None]


def frames_text(frames: Sequence[int]) -> str:
    """Frame numbers as ranges: [0, 1, 2, 5, 7, 8] → "0-2, 5, 7-8"."""
    out, run = [], []
    for f in sorted(frames):
        if run and f == run[-1] + 1:
            run.append(f)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [f]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


def _presence_warnings(names: list[str], counts: torch.Tensor) -> list[str]:
    out = []
    n_f = counts.shape[1]
    for name, c in zip(names, counts.tolist()):
        empty = [f for f, v in enumerate(c) if v == 0]
        if not empty:
            continue
        if len(empty) == n_f:
            out.append(f"region '{name}' is empty in every frame: it cannot be edited or separated; "
                       "remove it or fix its mask")
            continue
        out.append(f"region '{name}' is empty in {len(empty)} of {n_f} frames ({frames_text(empty)}): its prompt "
                   "binds to nothing there")
        first = next(f for f, v in enumerate(c) if v > 0)
        lost = [f for f in empty if f > first]
        if lost:
            out.append(f"region '{name}' vanishes mid-clip: present from frame {first} but absent in frames "
                       f"{frames_text(lost)}; a lost track or an object leaving the frame? check the masks there")
    return out


def _overlap_warnings(names: list[str], b: torch.Tensor, counts: torch.Tensor, tolerance: float) -> list[str]:
    out = []
    flat = b.flatten(2).float()                                   # [R, F, P]
    inter = torch.einsum("rfp,sfp->rsf", flat, flat)              # overlap pixels per pair and frame
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            ov = inter[i, j] > 0
            if not ov.any():
                continue
            common = inter[i, j][ov].sum()
            size_i, size_j = counts[i][ov].sum(), counts[j][ov].sum()
            # Part inside instance: within the overlap's frames, one mask lies (almost) inside the other.
            i_in_j = size_i - common <= tolerance * size_i
            j_in_i = size_j - common <= tolerance * size_j
            if i_in_j or j_in_i:
                continue
            frames = torch.nonzero(ov).flatten().tolist()
            out.append(f"regions '{names[i]}' and '{names[j]}' overlap in frames {frames_text(frames)} "
                       f"({100 * float(common / size_i):.1f}% of '{names[i]}', {100 * float(common / size_j):.1f}% "
                       f"of '{names[j]}') but neither lies inside the other; overlaps are meant for a part inside "
                       "its instance (pixels in both belong to both), so check the masks or subtract one from the other")
    return out


def _grid_warnings(names: list[str], b: torch.Tensor, counts: torch.Tensor, latent_size: tuple[int, int],
                   sizes: Sequence[tuple[int, int]], rule: str) -> list[str]:
    if not sizes:
        return []
    h, w = min(sizes, key=lambda s: (s[0] * s[1], s))
    lat = F.interpolate(b.to(torch.uint8), size=tuple(latent_size), mode="nearest").bool()
    grid = downsample(lat, (h, w), rule).flatten(2).sum(-1)                      # [R, F]
    cell_w, cell_h = -(-b.shape[3] // w), -(-b.shape[2] // h)
    out = []
    for r, name in enumerate(names):
        lost = torch.nonzero((counts[r] > 0) & (grid[r] == 0)).flatten().tolist()
        if lost:
            px = int(counts[r][lost].max())
            out.append(f"region '{name}' covers no token of the {w}x{h} attention grid in frames {frames_text(lost)} "
                       f"(at most {px} pixels there; one token samples one pixel per {cell_w}x{cell_h} px cell, "
                       f"downsample '{rule}'): at the smallest modulated resolution it falls between tokens, so "
                       "ST-Layout cannot separate it there; use downsample 'nearest_rescue', grow it to at least "
                       f"{cell_w}x{cell_h} px, or edit at a larger size")
    return out


def mask_warnings(masks: Mapping[str, torch.Tensor], latent_size: tuple[int, int],
                  modulated_sizes: Sequence[tuple[int, int]] | None = None, background_lock: bool = True,
                  threshold: float = 0.5, containment_tolerance: float = 0.01,
                  rule: str = DEFAULT_RULE) -> list[str]:
    """Warnings about region masks `{name: [F, H, W]}` (pixels `> threshold`), in this order:

    - regions empty in some (or every) frame;
    - regions that vanish mid-clip (absent in a frame after one where they are present);
    - overlaps that are not part-inside-instance: over the frames where two masks overlap, neither
      has more than `containment_tolerance` of its pixels outside the other;
    - regions with no token at the smallest of `modulated_sizes` (default: every attention size but
      the latent's own, docs/design.md §6) in a frame where they have pixels, under the downsampling
      `rule` (docs/design.md §19);
    - with `background_lock`, the share of pixels in no region (kept from the source, not edited).
    """
    names = list(masks)
    b = _binary(masks, threshold)
    counts = b.flatten(2).sum(-1)                                   # [R, F]
    sizes = attention_sizes(tuple(latent_size))[1:] if modulated_sizes is None else list(modulated_sizes)
    out = _presence_warnings(names, counts)
    out += _overlap_warnings(names, b, counts, containment_tolerance)
    out += _grid_warnings(names, b, counts, latent_size, sizes, rule)
    if background_lock:
        free = (~b.any(0)).flatten(1).double().mean(1)              # [F]
        if bool((free > 0).any()):
            worst = int(free.argmax())
            out.append(f"{100 * float(free.mean()):.1f}% of the pixels (up to {100 * float(free[worst]):.1f}% in frame "
                       f"{worst}) are in no region: with the background lock on they are kept from the source video, "
                       "not edited; give them a region (e.g. the complement of the others) if they should change")
    return out


# --- attention cells of a built layout (VideoGrainLayout's report) ------------------------------------

@dataclass(frozen=True)
class LevelCells:
    """One region at one token grid: cells owned (summed over frames) and the frames that need notice."""

    size: tuple[int, int]
    cells: int
    lost_frames: tuple[int, ...]     # non-empty at latent size, no cell here (only possible under `nearest`)
    rescued_frames: tuple[int, ...]  # `nearest` would give no cell here; the layout's rule kept some


def modulated_sizes(layout: RegionLayout) -> list[tuple[int, int]]:
    """Token grids of the levels ST-Layout modulates by default: all but the highest resolution (docs/design.md §6)."""
    return attention_sizes(layout.latent_size)[1:]


def region_cells(layout: RegionLayout, sizes: list[tuple[int, int]] | None = None) -> list[list[LevelCells]]:
    """Per region, per size (default: every attention size, latent first): cells owned and frames of note."""
    sizes = attention_sizes(layout.latent_size) if sizes is None else sizes
    present = layout.masks.any((2, 3))                                        # [K, F]
    table: list[list[LevelCells]] = [[] for _ in range(layout.num_regions)]
    for h, w in sizes:
        masks = layout.masks_at(h, w)
        owned = masks.any((2, 3))
        by_nearest = nearest(layout.masks, (h, w)).any((2, 3)) if (h, w) != layout.latent_size else owned
        cells = masks.sum((1, 2, 3))
        for k in range(layout.num_regions):
            lost = (present[k] & ~owned[k]).nonzero().flatten().tolist()
            rescued = (present[k] & owned[k] & ~by_nearest[k]).nonzero().flatten().tolist()
            table[k].append(LevelCells((h, w), int(cells[k]), tuple(lost), tuple(rescued)))
    return table


def _frames(frames: tuple[int, ...], total: int) -> str:
    shown = ", ".join(str(f) for f in frames[:8]) + (", …" if len(frames) > 8 else "")
    return f"{len(frames)} of {total} frames ({shown})"


def region_report(layout: RegionLayout, modulated: list[tuple[int, int]] | None = None) -> tuple[list[str], list[str]]:
    """`(lines, warnings)`: one line per region with its cells at every attention size, and a warning
    for each region that owns no cell at a `modulated` size (default `modulated_sizes`) in a frame
    where it is non-empty at latent size. Rescues by the layout's rule are noted in the lines."""
    modulated = modulated_sizes(layout) if modulated is None else modulated
    lines, warnings = [], []
    for k, levels in enumerate(region_cells(layout)):
        label = f"region {layout.names[k]} ({layout.kinds[k]})"
        counts = ", ".join(f"{lc.cells} at {lc.size[1]}x{lc.size[0]}" for lc in levels)
        lines.append(f"{label}: cells over {layout.frames} frames: {counts} (downsample {layout.downsample})")
        for lc in levels:
            where = f"{lc.size[1]}x{lc.size[0]}"
            if lc.rescued_frames:
                lines.append(f"  {where}: nearest would leave it no cell in {_frames(lc.rescued_frames, layout.frames)};"
                             f" '{layout.downsample}' gave it its best-covered cells there")
            if lc.lost_frames and lc.size in modulated:
                warnings.append(
                    f"{label} owns no cell at the modulated level {where} in {_frames(lc.lost_frames, layout.frames)} "
                    f"where its mask is non-empty (downsample '{layout.downsample}'): its prompt cannot be pulled into "
                    f"it there and is pushed down everywhere instead; use downsample 'nearest_rescue' or a larger mask")
    return lines, warnings
