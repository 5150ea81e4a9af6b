"""The PnP features an inversion records for the first editing steps (docs/design.md §10, quirk 7).

What is recorded, per editing step i < inject_step and per CFG half (0 = cond, 1 = uncond), for F frames:

- `res3`, `res4`, `res6`: the residual-branch outputs (before the skip add) of the ResBlocks
  output_blocks[3][0], [4][0], [6][0], [F, C, h, w];
- `q4`, `k4` … `q9`, `k9`: the projected self-attention q and k of output_blocks[4] … [9], [F, h·w, C].

Editing step i uses what the inversion computed one step earlier on the schedule (the official offset):
the inversion call at σ_{i+1}, the level just below the editing step's σ_i. So `inject_step` can be at
most `steps − 1` (the last editing step has no inversion call below it).

Tensors live on the CPU in the model's dtype; `nbytes` is what they take and `expected_bytes` the
formula for an SD1.5-layout UNet. Nothing here imports ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

RESIDUAL_BLOCKS = (3, 4, 6)     # output_blocks[n][0] whose residual branch is recorded
QK_BLOCKS = (4, 5, 6, 7, 8, 9)  # output_blocks[n] whose attn1 q/k are recorded
# UNet level (0 = latent grid, 1 = half, 2 = quarter) of each recorded output block, and its width in
# multiples of model_channels (SD1.5 channel_mult 1, 2, 4, 4).
_LEVEL = {3: 2, 4: 2, 5: 2, 6: 1, 7: 1, 8: 1, 9: 0}
_WIDTH = {0: 1, 1: 2, 2: 4}
HALVES = (0, 1)

EXTRA_PREFIX = "pnp/"  # name prefix of the features among a cache file's extra tensors


def feature_names() -> list[str]:
    """Names of the features recorded per step and half, in a fixed order."""
    return [f"res{n}" for n in RESIDUAL_BLOCKS] + [f"{p}{n}" for n in QK_BLOCKS for p in ("q", "k")]


def expected_bytes(frames: int, level_sizes: list[tuple[int, int]], model_channels: int, inject_step: int,
                   itemsize: int) -> int:
    """Bytes of the features of `inject_step` steps (both CFG halves) for an SD1.5-layout UNet.

    `level_sizes` are the token grids of the UNet levels (latent grid first, as
    `masks.layout.attention_sizes`). Per frame, step and half the element count is
    Σ_res C·h·w + Σ_qk 2·C·h·w, C = model_channels × (1, 2, 4) at the three levels; for a 512² clip
    (model_channels 320) that is 9,175,040 elements, 18.4 MB in fp16, so 16 frames take 0.59 GB per step.
    """
    cells = [h * w for h, w in level_sizes]
    per_frame = sum(cells[_LEVEL[n]] * _WIDTH[_LEVEL[n]] * model_channels for n in RESIDUAL_BLOCKS)
    per_frame += sum(2 * cells[_LEVEL[n]] * _WIDTH[_LEVEL[n]] * model_channels for n in QK_BLOCKS)
    return per_frame * frames * inject_step * len(HALVES) * itemsize


@dataclass(eq=False)
class PnPFeatures:
    """Recorded features of the first `inject_step` editing steps, keyed by (step, half, name).

    `sigmas` is the editing schedule they were recorded for (σ_T … 0); `frames` the clip length.
    """

    inject_step: int
    frames: int
    sigmas: torch.Tensor
    tensors: dict[tuple[int, int, str], torch.Tensor] = field(default_factory=dict)

    def put(self, step: int, half: int, name: str, t: torch.Tensor) -> None:
        """Keep a CPU copy of `t` (the same step/half/name recorded twice keeps the last)."""
        self.tensors[(int(step), int(half), name)] = t.detach().to("cpu", copy=True)

    def get(self, step: int, half: int, name: str) -> torch.Tensor | None:
        return self.tensors.get((int(step), int(half), name))

    @property
    def nbytes(self) -> int:
        """Bytes the recorded tensors take."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def missing(self) -> list[tuple[int, int, str]]:
        """(step, half, name) that should have been recorded but were not."""
        want = [(i, h, n) for i in range(self.inject_step) for h in HALVES for n in feature_names()]
        return [k for k in want if k not in self.tensors]

    def describe(self) -> str:
        """One line for logs and the UI: steps, frames and size."""
        return (f"PnP features of {self.inject_step} editing step(s) × 2 CFG halves, {self.frames} frames: "
                f"{self.nbytes / 1e6:.1f} MB ({self.nbytes:,} bytes) on the CPU")

    # The disk cache stores them as extra tensors named pnp/<step>/<half>/<name>.
    def to_extra(self) -> dict[str, torch.Tensor]:
        return {f"{EXTRA_PREFIX}{s}/{h}/{n}": t for (s, h, n), t in self.tensors.items()}

    def meta(self) -> dict:
        return {"inject_step": self.inject_step, "frames": self.frames}

    @classmethod
    def from_extra(cls, extra: dict[str, torch.Tensor], meta: dict, sigmas: torch.Tensor) -> "PnPFeatures | None":
        """The features stored by `to_extra`/`meta`, or None when the entry holds none or is inconsistent."""
        if not isinstance(meta, dict) or not isinstance(meta.get("inject_step"), int):
            return None
        features = cls(meta["inject_step"], int(meta.get("frames", 0)), sigmas)
        for name, t in extra.items():
            if not name.startswith(EXTRA_PREFIX):
                continue
            step, half, feature = name[len(EXTRA_PREFIX):].split("/", 2)
            features.tensors[(int(step), int(half), feature)] = t
        return None if features.missing() else features
