"""Trajectories per latent size from a forward flow (docs/design.md §10.1), vectorised.

Rules (the official `sample_trajectories_new`, with its non-square bug fixed):
- Flow units: the pixel flow is divided by max(H, W) (fp32); channel 0 = column shift, 1 = row shift.
- Sampling: latent cell (i, j) of an h×w grid takes the flow of image pixel (i·H // h, j·W // w), the
  top-left pixel of its block (integer floor, no averaging).
- Shift in cells = round(max(h, w) · flow) in fp32, round half to even (torch.round): ±0.5 cell -> 0.
- Links: cell (t, r, c) links to (t+1, r + Δrow, c + Δcol) when that cell is inside the grid, else its
  chain ends. Only forward links.
- Collisions: when several cells of frame t link to the same target, the source with the LOWEST
  priority keeps the link and the others' chains end (never re-linked). Priorities are
  `keeper_priorities(F, h·w, seed)`: one `torch.randperm(h·w)` per source frame t = 0..F-2 from a CPU
  `torch.Generator` seeded with `seed`, drawn in frame order. Each size uses its own generator with the
  same seed, so a size's trajectories do not depend on which other sizes are built; the same seed gives
  the same result. (The official draws from Python's global `random`, whose state is arbitrary.)
- Every cell belongs to exactly one chain, with at most one cell per frame; a cell without a kept
  incoming link starts a chain. Any aspect ratio works (the official's (t, x // H, x % H) bug that
  keeps some cells of non-square grids from starting chains is not reproduced).

Row layouts (tokens n = t·h·w + r·w + c, frame-major, one CFG branch):
- "chain" (the default, docs/design.md §10.1 [rec] "self + trajectory"): S = F slots; slot 0 = the
  token itself, then the other members of its chain in time order (earlier and later frames), packed,
  then padding. Padding slots are invalid and point at the token itself (safe to gather).
- "official": the slots the official attention actually reads. Its row is [self, same-frame neighbours
  in a (2·win+1)² window (raster order, out-of-grid ones dropped and the rest packed, padded to B − 1),
  the other chain members in time order padded to L − 1], B = (2·win+1)², L the longest chain at that
  size, win = 2 at the top level (h, w) = (H // 8, W // 8) and 1 elsewhere; the attention reads slot 0
  plus the row's last F − 1 slots (Python slicing: the whole row when F − 1 ≥ B + L − 1, so slot 0 then
  appears twice; the whole row again for F = 1). When L < F this tail reaches into the neighbour block,
  so a token also attends to a few bottom-right neighbours. Building it costs one extra [N, B − 1]
  neighbour table, so it is kept behind `layout="official"` for comparisons.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

LAYOUTS = ("chain", "official")


class TrajectoryError(ValueError):
    """Flow, sizes or layout that cannot give trajectories; the message names what is wrong."""


@dataclass(frozen=True, eq=False)
class Trajectories:
    """Attention slots of every token of one latent size (one CFG branch, frame-major tokens).

    index [F·h·w, S] long: token indices gathered for each query token; slot 0 is the token itself.
    valid [F·h·w, S] bool: which slots count (invalid slots are masked out of the softmax).
    chain [F·h·w] long: chain id of each token (ids are dense, 0..chains-1).
    span: the number of leading slots that contain any valid entry (the attention reads only these);
    computed from `valid` unless given.
    """

    size: tuple[int, int]
    frames: int
    index: torch.Tensor
    valid: torch.Tensor
    chain: torch.Tensor
    layout: str = "chain"
    span: int = -1  # computed from `valid` when not given
    _copies: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self):
        tokens = self.frames * self.size[0] * self.size[1]
        if self.index.shape != self.valid.shape or self.index.ndim != 2 or self.index.shape[0] != tokens:
            raise TrajectoryError(
                f"index {tuple(self.index.shape)} and valid {tuple(self.valid.shape)} must both be "
                f"[{tokens}, S] for {self.frames} frames of {self.size[0]}x{self.size[1]}")
        if self.span < 0:
            used = self.valid.any(0).nonzero()
            object.__setattr__(self, "span", int(used.max()) + 1 if used.numel() else 1)

    @property
    def tokens(self) -> int:
        return self.index.shape[0]

    @property
    def longest(self) -> int:
        """Length of the longest chain."""
        return int(torch.bincount(self.chain).max())

    def to(self, device) -> "Trajectories":
        """A copy with the tensors on `device`."""
        return Trajectories(self.size, self.frames, self.index.to(device), self.valid.to(device),
                            self.chain.to(device), self.layout, self.span)

    def on(self, device) -> "Trajectories":
        """This object's copy on `device`, made once and kept (the attention calls it at every layer)."""
        device = torch.device(device)
        if self.index.device == device:
            return self
        key = str(device)
        if key not in self._copies:
            self._copies[key] = self.to(device)
        return self._copies[key]

    def __deepcopy__(self, memo):
        return self  # immutable; travels inside model options, which ComfyUI deep-copies on every clone


def keeper_priorities(frames: int, cells: int, seed: int) -> torch.Tensor:
    """Collision priorities [F-1, cells] long: row t is a seeded permutation; the lowest value keeps the link."""
    generator = torch.Generator().manual_seed(int(seed))
    rows = [torch.randperm(cells, generator=generator) for _ in range(frames - 1)]
    return torch.stack(rows) if rows else torch.empty(0, cells, dtype=torch.long)


def cell_shifts(flow: torch.Tensor, image_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Per-cell shift in cells [F-1, h, w, 2] long, (Δrow, Δcol), from a pixel flow [F-1, H, W, 2]."""
    big_h, big_w = image_size
    h, w = size
    rows = torch.arange(h) * big_h // h
    cols = torch.arange(w) * big_w // w
    sampled = flow[:, rows][:, :, cols].float()
    # fp32 division by max(H, W) first, then × max(h, w), as the official (elementwise, so sampling
    # before dividing gives the same numbers)
    cells = torch.round(max(h, w) * (sampled / max(big_h, big_w)))
    limit = float(max(h, w) + 1)  # any larger shift leaves the grid too; keeps huge values castable
    cells = cells.clamp(-limit, limit).long()
    return torch.stack([cells[..., 1], cells[..., 0]], dim=-1)


def _links(shifts: torch.Tensor, priorities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Kept forward link of every cell of frames 0..F-2: [F-1, h·w] target cell in frame t+1, or -1."""
    h, w = size
    steps = shifts.shape[0]
    r = torch.arange(h).view(1, h, 1) + shifts[..., 0]
    c = torch.arange(w).view(1, 1, w) + shifts[..., 1]
    inside = ((r >= 0) & (r < h) & (c >= 0) & (c < w)).reshape(steps, h * w)
    target = (r.clamp(0, h - 1) * w + c.clamp(0, w - 1)).reshape(steps, h * w)
    # lowest priority per target, all frames at once (targets offset by frame)
    flat_target = (target + torch.arange(steps).view(-1, 1) * (h * w))[inside]
    best = torch.full((steps * h * w,), h * w, dtype=torch.long)
    best.scatter_reduce_(0, flat_target, priorities[inside], reduce="amin")
    keep = inside.clone()
    keep[inside] = priorities[inside] == best[flat_target]
    return torch.where(keep, target, torch.full_like(target, -1))


def _chain_ids(links: torch.Tensor, frames: int, cells: int) -> torch.Tensor:
    """Chain id of every cell [F, cells]: a linked target inherits its source's id, others start a chain."""
    chain = torch.empty(frames, cells, dtype=torch.long)
    chain[0] = torch.arange(cells)
    count = cells
    for t in range(frames - 1):  # a loop over frames only
        nxt = torch.full((cells,), -1, dtype=torch.long)
        linked = links[t] >= 0
        nxt[links[t][linked]] = chain[t][linked]
        starts = nxt < 0
        fresh = int(starts.sum())
        nxt[starts] = torch.arange(count, count + fresh)
        count += fresh
        chain[t + 1] = nxt
    return chain


def _chain_slots(chain: torch.Tensor, frames: int, cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Other chain members of every token [N, F-1] (time order, packed, -1 = none)."""
    tokens = frames * cells
    flat = chain.reshape(-1)
    frame_of = torch.arange(tokens) // cells
    members = torch.full((int(flat.max()) + 1, frames), -1, dtype=torch.long)
    members[flat, frame_of] = torch.arange(tokens)
    row = members[flat]  # [N, F]: the token's chain, one column per frame
    # drop the token's own frame: column table [F, F-1] of the other frames in time order
    others = torch.arange(frames).repeat(frames, 1)
    others = others[~torch.eye(frames, dtype=torch.bool)].view(frames, frames - 1)
    row = row.gather(1, others[frame_of])
    order = torch.sort((row < 0).to(torch.uint8), dim=1, stable=True).indices  # pack valid first
    return row.gather(1, order)


def _neighbour_slots(size: tuple[int, int], window: int, frames: int) -> torch.Tensor:
    """Same-frame neighbours of every token [N, (2·window+1)² - 1], official order, packed, -1 = none."""
    h, w = size
    offsets = [(i, j) for i in range(-window, window + 1) for j in range(-window, window + 1) if (i, j) != (0, 0)]
    di = torch.tensor([o[0] for o in offsets])
    dj = torch.tensor([o[1] for o in offsets])
    r = torch.arange(h).view(h, 1, 1) + di
    c = torch.arange(w).view(1, w, 1) + dj
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    cell = torch.where(inside, r * w + c, torch.full_like(r, -1)).reshape(h * w, -1)
    order = torch.sort((cell < 0).to(torch.uint8), dim=1, stable=True).indices
    cell = cell.gather(1, order)
    base = (torch.arange(frames) * h * w).view(frames, 1, 1)
    return torch.where(cell >= 0, cell + base, cell).reshape(frames * h * w, -1)


def _official_rows(chain_slots: torch.Tensor, chain: torch.Tensor, size, window: int, frames: int) -> torch.Tensor:
    """Slot 0 plus the last F-1 slots of the official row (docs/design.md §10.1), -1 = masked."""
    longest = int(torch.bincount(chain.reshape(-1)).max())
    tokens = chain.numel()
    own = torch.arange(tokens).view(-1, 1)
    row = torch.cat([own, _neighbour_slots(size, window, frames), chain_slots[:, :longest - 1]], dim=1)
    start = max(row.shape[1] - (frames - 1), 0) if frames > 1 else 0  # row[-(F-1):]; row[-0:] = whole row
    return torch.cat([own, row[:, start:]], dim=1)


def _check(flow: torch.Tensor, image_size, latent_sizes, layout: str) -> None:
    if layout not in LAYOUTS:
        raise TrajectoryError(f"unknown trajectory layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not isinstance(flow, torch.Tensor) or flow.ndim != 4 or flow.shape[-1] != 2:
        shape = tuple(flow.shape) if hasattr(flow, "shape") else type(flow).__name__
        raise TrajectoryError(f"flow must be a tensor [F-1, H, W, 2] in pixels, got {shape}")
    big_h, big_w = image_size
    if tuple(flow.shape[1:3]) != (big_h, big_w):
        raise TrajectoryError(f"flow is {flow.shape[2]}x{flow.shape[1]} (WxH) but the image is {big_w}x{big_h}")
    if not bool(torch.isfinite(flow).all()):
        raise TrajectoryError("flow contains NaN or infinite values")
    for h, w in latent_sizes:
        if not (1 <= h <= big_h and 1 <= w <= big_w):
            raise TrajectoryError(f"latent size {h}x{w} must be between 1x1 and the image size {big_h}x{big_w}")


def build_trajectories(flow: torch.Tensor, image_size: tuple[int, int], latent_sizes, seed: int,
                       layout: str = "chain") -> dict[tuple[int, int], Trajectories]:
    """Trajectories for each latent size (h, w) from a forward flow [F-1, H, W, 2] in pixels.

    image_size (H, W) is the flow's frame size; `seed` picks the collision keepers (module docstring);
    `layout` "chain" (self + chain, S = F) or "official" (the slots the official attention reads).
    """
    latent_sizes = [(int(h), int(w)) for h, w in latent_sizes]
    _check(flow, image_size, latent_sizes, layout)
    flow = flow.detach().cpu().float()
    frames = flow.shape[0] + 1
    big_h, big_w = image_size
    result = {}
    for size in latent_sizes:
        cells = size[0] * size[1]
        links = _links(cell_shifts(flow, image_size, size), keeper_priorities(frames, cells, seed), size)
        chain = _chain_ids(links, frames, cells)
        slots = _chain_slots(chain, frames, cells)
        own = torch.arange(frames * cells).view(-1, 1)
        if layout == "chain":
            index = torch.cat([own, slots], dim=1)
        else:
            window = 2 if size == (big_h // 8, big_w // 8) else 1
            index = _official_rows(slots, chain, size, window, frames)
        valid = index >= 0
        index = torch.where(valid, index, own)
        result[size] = Trajectories(size, frames, index, valid, chain.reshape(-1), layout)
    return result
