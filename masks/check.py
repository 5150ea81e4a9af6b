"""Region check: how many attention cells each region owns at each level, and which regions lose all.

A region that is non-empty at latent size in a frame but owns no cell at a modulated level in that
frame cannot pull its prompt there: its tokens are negative for every pixel, so the prompt is pushed
down everywhere (issue 14). Under `nearest` that happens to thin parts; the other rules of
`masks.downsample` rescue such regions, and the check says where they had to.
"""
from __future__ import annotations

from dataclasses import dataclass

from .downsample import nearest
from .layout import RegionLayout, attention_sizes


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
