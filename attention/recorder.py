"""Recording where each region prompt's cross-attention lands during an edit (VideoGrainAttentionMaps).

The sampler puts an `AttentionRecorder` into the model's transformer_options under `RECORDER_KEY`;
the cross-attention patch adds each recorded call to it. It also notes which blocks the patches ran at,
so the sampler can check after the first step that every installed block was hit (docs/design.md §6).
A lock guards its sums: current ComfyUI may run cond and uncond in two threads on two devices.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from .settings import STLayoutSettings, StepRecord

RECORDER_KEY = "videograin_recorder"  # transformer_options key of the sampler's AttentionRecorder
RECORD_EVERY = 5  # outside the modulation window, cross-attention maps are recorded every 5th step


class AttentionRecorder:
    """Accumulates each region's cross-attention mass per pixel on the conditional branch.

    Maps are kept at the layout's latent size, averaged over heads, layers and steps, separately
    for the modulation window and for all steps. Shared by identity across model-option copies.
    """

    def __init__(self, layout, expected_blocks=()):
        self.layout = layout
        # Which (kind, block) the patch must be called at; checked after the first step.
        self.expected = {(kind, tuple(block)) for block in expected_blocks for kind in ("self", "cross")}
        self.hits: set = set()
        k, f = layout.num_regions, layout.frames
        h, w = layout.latent_size
        self.sums = {"window": torch.zeros(k, f, h, w), "all": torch.zeros(k, f, h, w)}
        self.counts = {"window": 0, "all": 0}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self

    def hit(self, kind: str, block) -> None:
        """Note that the `kind` patch ran at `block` (ComfyUI's ("input", 4)-style tag)."""
        if block is not None:
            with self._lock:
                self.hits.add((kind, tuple(block)))

    def missing(self) -> list:
        """Expected (kind, block) pairs the patch was never called at."""
        return sorted(self.expected - self.hits)

    @staticmethod
    def wants(settings: STLayoutSettings, step: StepRecord | None) -> bool:
        """Whether a conditional cross-attention call at `step` is recorded: every modulated step, and
        every RECORD_EVERY-th step outside the window for the "all steps" maps (recording materialises
        the [F·h·w, 77] probabilities per head, so it is kept off the other steps)."""
        return step is not None and (settings.in_window(step) or step.index % RECORD_EVERY == 0)

    def add(self, probs: torch.Tensor, k_bits: torch.Tensor, frames: int, h: int, w: int, in_window: bool) -> None:
        """Add one layer call: `probs` [1, heads, F·h·w, keys] fp32."""
        mean = probs[0].mean(0)                                                # [F·h·w, keys]
        regions = torch.arange(self.layout.num_regions, device=k_bits.device)
        owned = ((k_bits[None, :] >> regions[:, None]) & 1).to(mean.dtype)    # [K, keys]
        mass = (mean @ owned.T).T.reshape(-1, frames, h, w)                   # [K, F, h, w]
        mass = torch.nn.functional.interpolate(mass.float(), size=self.layout.latent_size, mode="bilinear",
                                               align_corners=False).cpu()
        with self._lock:
            for name in (("window", "all") if in_window else ("all",)):
                self.sums[name] += mass
                self.counts[name] += 1

    def result(self) -> "AttentionRecord":
        maps = {n: self.sums[n] / max(self.counts[n], 1) for n in self.sums}
        return AttentionRecord(list(self.layout.names), maps["window"], maps["all"], dict(self.counts),
                               self.layout.masks.float().cpu())


@dataclass(eq=False)
class AttentionRecord:
    """What VideoGrainSampler hands to VideoGrainAttentionMaps: [K, F, H_lat, W_lat] per window."""

    names: list
    window: torch.Tensor
    all_steps: torch.Tensor
    counts: dict
    masks: torch.Tensor  # float [K, F, H_lat, W_lat]: the regions the maps are judged against

    def __deepcopy__(self, memo):
        return self

    @classmethod
    def empty(cls, frames: int, h: int, w: int) -> "AttentionRecord":
        """The record of an edit without regions: nothing recorded."""
        nothing = torch.zeros(0, frames, h, w)
        return cls([], nothing, nothing.clone(), {"window": 0, "all": 0}, nothing.clone())

    def inside_share(self, steps: str = "modulated") -> torch.Tensor:
        """[K]: the share of each region prompt's attention mass that fell inside its own mask."""
        maps = self.window if steps == "modulated" else self.all_steps
        inside = (maps * self.masks).flatten(1).sum(1)
        return inside / maps.flatten(1).sum(1).clamp_min(1e-12)
