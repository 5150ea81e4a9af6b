"""The knobs of ST-Layout Attn and the two rules every call applies: which steps are modulated, and the
per-query weight w_q = λ·τ(t)·a_q (docs/design.md §3, §5.1)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..sampling.schedule import time_factor

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond codes
BRANCHES = {"cond": (COND,), "uncond": (UNCOND,), "both": (COND, UNCOND)}


@dataclass(frozen=True)
class StepRecord:
    """Where a UNet call sits in its sampling run: step `index` of `steps`, at training timestep `t`."""

    index: int
    steps: int
    timestep: int


@dataclass(frozen=True)
class STLayoutSettings:
    """The knobs of VideoGrainApplySTLayout; defaults reproduce the official code (docs/design.md §3, §8)."""

    cross_strength: float = 1.0
    self_strength: float = 0.3
    modulated_fraction: float = 0.3
    cross_branch: str = "cond"
    self_branch: str = "uncond"

    def window_steps(self, steps: int) -> int:
        """Number of leading steps that are modulated: 15 of 50 at the default 0.3 (quirk 4)."""
        return int(math.floor(self.modulated_fraction * steps + 0.5))

    def in_window(self, step: StepRecord | None) -> bool:
        """Whether `step` lies in the modulation window (never outside a sampling run)."""
        return step is not None and step.index < self.window_steps(step.steps)

    def strength(self, kind: str) -> float:
        """λ of the "self" (attn1) or "cross" (attn2) modulation."""
        return self.self_strength if kind == "self" else self.cross_strength

    def branches(self, kind: str) -> tuple[int, ...]:
        """The CFG codes whose `kind` attention is modulated."""
        return BRANCHES[self.self_branch if kind == "self" else self.cross_branch]


def modulation_weight(strength: float, step: StepRecord, area: torch.Tensor) -> torch.Tensor:
    """w_q = λ·τ(t)·a_q, unclamped (docs/design.md §5.1): `area` is the layer's per-query area term."""
    return strength * time_factor(step.timestep) * area
