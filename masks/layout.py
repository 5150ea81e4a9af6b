"""The region layout: masks at every attention size, text-token ownership and the area terms.

`RegionLayout` is what the ST-Layout attention (docs/design.md §5) and the latent blend (§9) consume. It is
immutable once built (ComfyUI deep-copies model options, so `__deepcopy__` returns the object
itself) and caches what it derives per (size, device).

Region membership is an int64 bit set (`binding.bits`): bit k is region k, so overlapping masks
(a part inside an instance) need one integer per token.

Masks reach each attention size by the layout's downsampling rule (`masks.downsample`: `nearest`
as in the official code, or the default `nearest_rescue`, which is `nearest` except that a region
`nearest` would leave without a cell in a frame keeps its best-covered cells). The area terms
|R_k|/(h·w) are counted on those masks, so they follow the rule.

A layout with no regions is valid: it stands for a global edit (docs/design.md quirk 17). Consumers must
then switch modulation and blend off; `union()` returns all ones so a blend with it is a no-op.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..binding.bits import MAX_REGIONS, MAX_TOKENS, pack_bits
from .downsample import DEFAULT_RULE, RULES
from .downsample import downsample as resize_masks

KINDS = ("class", "instance", "part", "background")

_log = logging.getLogger(__name__)


class LayoutError(ValueError):
    """A region mask that cannot enter a layout; `region` is its 0-based index or None."""

    def __init__(self, message: str, region: int | None = None):
        self.region = region
        super().__init__(message)


@dataclass(frozen=True, eq=False)
class RegionSpec:
    """One region as the VideoGrainRegion node emits it: a pixel mask [F, H, W], its local prompt
    (verbatim part of the global prompt, or "" to separate without binding text) and its kind."""

    mask: torch.Tensor
    prompt: str
    kind: str = "instance"


@dataclass(eq=False)
class RegionLayout:
    """Regions in order: latent-size masks, text-token ownership bits and derived per-size terms."""

    names: list[str]
    prompts: list[str]
    kinds: list[str]
    masks: torch.Tensor       # bool [K, F, H_lat, W_lat]
    token_bits: torch.Tensor  # int64 [77]
    downsample: str = DEFAULT_RULE  # how masks_at brings the latent masks to a token grid (masks.downsample)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        k = self.masks.shape[0]
        if self.masks.ndim != 4 or self.masks.dtype != torch.bool:
            raise ValueError(f"masks must be bool [K, F, H, W], got {self.masks.dtype} {list(self.masks.shape)}")
        if not (len(self.names) == len(self.prompts) == len(self.kinds) == k):
            raise ValueError(f"{k} masks but {len(self.names)} names, {len(self.prompts)} prompts, "
                             f"{len(self.kinds)} kinds")
        if k > MAX_REGIONS:
            raise ValueError(f"at most {MAX_REGIONS} regions, got {k}")
        if self.downsample not in RULES:
            raise ValueError(f"unknown downsampling rule {self.downsample!r}; expected one of {RULES}")
        if self.token_bits.shape != (MAX_TOKENS,) or self.token_bits.dtype != torch.long:
            raise ValueError(f"token_bits must be int64 [{MAX_TOKENS}], got {self.token_bits.dtype} "
                             f"{list(self.token_bits.shape)}")

    @property
    def num_regions(self) -> int:
        return self.masks.shape[0]

    @property
    def frames(self) -> int:
        return self.masks.shape[1]

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.masks.shape[2], self.masks.shape[3]

    def _cached(self, key, make):
        key = (key, str(self.masks.device))
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def masks_at(self, h: int, w: int) -> torch.Tensor:
        """bool [K, F, h, w]: the latent masks at an attention size under the layout's `downsample` rule.

        `nearest` is PyTorch's default resize (docs/design.md §2); `nearest_rescue` equals it except in frames
        where it would leave a region non-empty at latent size without any cell (module doc of
        `masks.downsample`). The latent size itself returns the latent masks.
        """
        return self._cached(("masks", h, w), lambda: resize_masks(self.masks, (h, w), self.downsample))

    def query_bits(self, h: int, w: int) -> torch.Tensor:
        """int64 [F·h·w]: bit k set where region k covers the token; frame-major (f, y, x) order."""
        def make():
            return pack_bits(self.masks_at(h, w).flatten(1))  # [F·h·w], f-major as ComfyUI's batch of frames
        return self._cached(("query_bits", h, w), make)

    def cross_area(self, h: int, w: int) -> torch.Tensor:
        """float32 [F·h·w]: a(f, p) = 1 − Σ_k m_k(f, p)·|R_k(f)|/(h·w) over every region (docs/design.md §5.2)."""
        def make():
            m = self.masks_at(h, w).float()                     # [K, F, h, w]
            sizes = m.sum((2, 3), keepdim=True)                 # |R_k(f)|
            return (1.0 - (m * sizes).sum(0) / (h * w)).flatten()
        return self._cached(("cross_area", h, w), make)

    def self_area(self, h: int, w: int) -> torch.Tensor:
        """float32 [F·h·w]: a_q = 1 − Σ_k [q∈R_k]·|R_k over all frames|/(F²·h·w) (docs/design.md §5.3, quirk 3)."""
        def make():
            m = self.masks_at(h, w).float()
            sizes = m.sum((1, 2, 3), keepdim=True)               # region k's tokens in all frames
            return (1.0 - (m * sizes).sum(0) / (self.frames ** 2 * h * w)).flatten()
        return self._cached(("self_area", h, w), make)

    def union(self) -> torch.Tensor:
        """float32 [F, 1, H_lat, W_lat]: union of all masks, the latent-blend mask (docs/design.md §9).

        All ones for a layout without regions, so that blending with it changes nothing (quirk 17).
        """
        def make():
            if self.num_regions == 0:
                return torch.ones((self.frames, 1, *self.latent_size), device=self.masks.device)
            return self.masks.any(0).float().unsqueeze(1)
        return self._cached(("union",), make)

    def to(self, device) -> RegionLayout:
        """The same layout with its tensors on `device`; derived terms stay cached per device."""
        device = torch.device(device)
        if self.masks.device == device:
            return self
        return RegionLayout(list(self.names), list(self.prompts), list(self.kinds), self.masks.to(device),
                            self.token_bits.to(device), self.downsample, self._cache)

    def __deepcopy__(self, memo):
        return self  # immutable once built; ComfyUI deep-copies model_options on every clone

    def __repr__(self) -> str:
        h, w = self.latent_size
        return (f"RegionLayout({self.num_regions} regions {self.names}, {self.frames} frames, latent {h}x{w}, "
                f"downsample {self.downsample})")


def latent_size_of(height: int, width: int) -> tuple[int, int]:
    """The SD1.5 latent grid of frames of height × width pixels: VAEEncode crops the frames to multiples
    of 8 first, so the size rounds down."""
    return height // 8, width // 8


def attention_sizes(latent_size: tuple[int, int], levels: int = 4) -> list[tuple[int, int]]:
    """Token grids of the UNet levels: the latent size, then halved with ceil (stride-2 convs)."""
    h, w = latent_size
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def build_layout(masks_px: Sequence[torch.Tensor], names: Sequence[str], prompts: Sequence[str],
                 kinds: Sequence[str], latent_size: tuple[int, int], threshold: float = 0.5,
                 token_bits: torch.Tensor | None = None, frames: int | None = None,
                 downsample: str = DEFAULT_RULE) -> RegionLayout:
    """Threshold pixel masks [F, H, W] (`> threshold`) and resize them with `nearest` to `latent_size`.

    `downsample` (one of `masks.downsample.RULES`) is how the layout brings the latent masks on to
    the smaller attention sizes; the pixel-to-latent step is always the official `nearest`.
    Checks: at most 63 regions; every mask [F, H, W] with the same F, H, W; H, W multiples of 8 and
    equal to 8× the latent size; F equal to `frames` when given (required without regions); no
    region empty in every frame at latent size. Warns when overlaps make an area term negative.
    `token_bits` defaults to no owned tokens. Raises `LayoutError`.
    """
    k = len(masks_px)
    if not (len(names) == len(prompts) == len(kinds) == k):
        raise LayoutError(f"{k} masks but {len(names)} names, {len(prompts)} prompts, {len(kinds)} kinds")
    if k > MAX_REGIONS:
        raise LayoutError(f"{k} regions; at most {MAX_REGIONS} are supported")
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            raise LayoutError(f"region {i + 1} has kind {kind!r}; expected one of {KINDS}", i)
    lat_h, lat_w = int(latent_size[0]), int(latent_size[1])
    if downsample not in RULES:
        raise LayoutError(f"unknown downsampling rule {downsample!r}; expected one of {RULES}")
    if token_bits is None:
        token_bits = torch.zeros(MAX_TOKENS, dtype=torch.long)
    if k == 0:
        if frames is None:
            raise LayoutError("a layout without regions needs `frames`")
        return RegionLayout([], [], [], torch.zeros((0, frames, lat_h, lat_w), dtype=torch.bool),
                            token_bits.clone(), downsample)
    for i, m in enumerate(masks_px):
        if m.ndim != 3:
            raise LayoutError(f"region {i + 1} mask must be [F, H, W], got {list(m.shape)}", i)
        n_f, h, w = m.shape
        if h % 8 or w % 8:
            raise LayoutError(f"region {i + 1} mask is {w}x{h}; width and height must be multiples of 8", i)
        if (h, w) != (8 * lat_h, 8 * lat_w):
            raise LayoutError(f"region {i + 1} mask is {w}x{h} but the latent is {lat_w}x{lat_h}, i.e. "
                              f"{8 * lat_w}x{8 * lat_h} pixels", i)
        expect = frames if frames is not None else masks_px[0].shape[0]
        if n_f != expect:
            raise LayoutError(f"region {i + 1} mask has {n_f} frames but the "
                              f"{'latent' if frames is not None else 'first mask'} has {expect}", i)
    binary = torch.stack([m.float() > threshold for m in masks_px])           # [K, F, H, W]
    lat = F.interpolate(binary.to(torch.uint8), size=(lat_h, lat_w), mode="nearest").bool()
    for i in range(k):
        if not lat[i].any():
            px = int(binary[i].sum())
            raise LayoutError(f"region {i + 1} ({names[i]}) is empty in every frame at the latent size "
                              f"{lat_w}x{lat_h} ({px} mask pixels above the threshold {threshold})", i)
        if lat[i].all():
            # The one rule for all-covering masks, whichever node made them (a file, SolidMask, a segmenter):
            # accepted (a part inside a whole-frame region is a valid layout), but the user is told.
            _log.warning("VideoGrain: region %d (%s) covers every latent cell of every frame: it keeps no "
                         "background (the whole frame is edited) and is separated from nothing but overlapping "
                         "regions", i + 1, names[i])
    layout = RegionLayout(list(names), list(prompts), list(kinds), lat, token_bits.clone(), downsample)
    _warn_negative_area(layout)
    return layout


def _warn_negative_area(layout: RegionLayout) -> None:
    # Official code applies negative area terms unclamped (docs/design.md §5.2): the pull on positive pairs
    # reverses. Reproduced on purpose; only the lower levels are modulated, but check all four.
    for h, w in attention_sizes(layout.latent_size):
        for term, values in (("cross", layout.cross_area(h, w)), ("self", layout.self_area(h, w))):
            low = float(values.min())
            if low < 0:
                _log.warning("VideoGrain: overlapping regions make the %s-attention area term negative (%.3f) at "
                             "%dx%d tokens; modulation there pushes positive pairs away instead of pulling them "
                             "(official behaviour, docs/design.md §5.2). Regions: %s", term, low, w, h, layout.names)
                return
