"""PnP feature injection: record features in the inversion, inject them in the first editing steps
(docs/design.md §10, quirk 7; what is recorded: `sampling.pnp_features`).

Three parts, all installed on a ModelPatcher clone by the node layer, none touching ComfyUI's globals:

- `PnPSession` (under `PNP_SESSION_KEY` in transformer_options, one per run): in "record" mode it keeps
  the features of the inversion calls that serve editing steps 0 … k−1; in "inject" mode it swaps them
  in during those steps. The attn1 replacements (`attention/patch.py`) hand it their q/k.
- `PnPResidual`: an object patch for `output_blocks[n][0].out_layers`, an `nn.Sequential` over the very
  same child modules (so weight keys and LoRA patches are unchanged). It hands its output, the ResBlock's
  residual branch before the skip add, to the session of the running call.
- `call_context_wrapper`: a DIFFUSION_MODEL wrapper that makes the running call's transformer_options
  visible to `PnPResidual` (a ResBlock is not given them) through a context variable.

Outside a run with a session every part is the identity. Nothing here imports ComfyUI.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

import torch

from ..sampling.pnp_features import QK_BLOCKS, RESIDUAL_BLOCKS, PnPFeatures
from ..sampling.schedule import level_index
from .patch import PNP_SESSION_KEY, cfg_chunks

PNP_KEY = "videograin_pnp"  # transformer_options key of the PnPSettings set by VideoGrainPnP
MODES = ("record", "inject")

_CALL_OPTIONS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("videograin_pnp_call", default=None)


class PnPError(RuntimeError):
    """Features that do not fit the running call (another clip, or a step that was not recorded)."""


@dataclass(eq=False)
class PnPSettings:
    """What VideoGrainPnP leaves on its clone: the number of injected steps and the unconditional
    conditioning the inversion uses to record the uncond half (the sampler's negative)."""

    inject_step: int
    negative: Any

    def __deepcopy__(self, memo):  # ComfyUI deep-copies model_options; immutable by convention
        return self


def residual_object_name(block: int) -> str:
    """Object-patch name of the recorded ResBlock's residual branch (ComfyUI module path)."""
    return f"diffusion_model.output_blocks.{block}.0.out_layers"


class PnPSession:
    """The PnP state of one sampling run: `mode` "record" (inversion) or "inject" (editing)."""

    def __init__(self, mode: str, features: PnPFeatures):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.features = mode, features
        self.injected: set[tuple[int, int, str]] = set()  # (step, half, name) swapped in so far

    def __deepcopy__(self, memo):
        return self

    def step(self, options: dict) -> int | None:
        """The editing step this model call serves, or None when it records / injects nothing.

        Editing step i runs at σ_i; it uses the inversion call at σ_{i+1}, one level lower.
        """
        sigma = options.get("sigmas")
        if sigma is None:
            return None
        j = level_index(self.features.sigmas, sigma)
        if j is None:
            return None  # not a level of the schedule the features belong to
        i = j - 1 if self.mode == "record" else j
        return i if 0 <= i < self.features.inject_step else None

    def _swap(self, name: str, t: torch.Tensor, options: dict, step: int) -> torch.Tensor:
        """Record or replace `t` ([chunks·F, ...]) chunk by chunk, by CFG half."""
        codes, frames = cfg_chunks(options, t.shape[0])
        if frames != self.features.frames:
            raise PnPError(f"VideoGrain PnP: the UNet runs {frames} frames per CFG branch but the features are "
                           f"for {self.features.frames}")
        if self.mode == "record":
            for c, code in enumerate(codes):
                self.features.put(step, code, name, t[c * frames:(c + 1) * frames])
            return t
        parts = []
        for c, code in enumerate(codes):
            saved = self.features.get(step, code, name)
            own = t[c * frames:(c + 1) * frames]
            if saved is None or tuple(saved.shape) != tuple(own.shape):
                raise PnPError(f"VideoGrain PnP: no recorded {name} of shape {tuple(own.shape)} for step {step}, "
                               f"half {code} (the inversion was made for another clip or size)")
            parts.append(saved.to(own.device, own.dtype, non_blocking=True))
            self.injected.add((step, code, name))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def qk(self, q: torch.Tensor, k: torch.Tensor, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """attn1's projected q/k of this call, or the recorded ones in an injected step."""
        block = options.get("block")
        if not block or block[0] != "output" or block[1] not in QK_BLOCKS:
            return q, k
        step = self.step(options)
        if step is None:
            return q, k
        n = block[1]
        return self._swap(f"q{n}", q, options, step), self._swap(f"k{n}", k, options, step)

    def residual(self, block: int, h: torch.Tensor, options: dict) -> torch.Tensor:
        """A ResBlock's residual-branch output, or the recorded one in an injected step."""
        step = self.step(options)
        return h if step is None else self._swap(f"res{block}", h, options, step)


class PnPResidual(torch.nn.Sequential):
    """`out_layers` of output_blocks[block][0], over the same child modules, reporting to the session."""

    def __init__(self, out_layers: torch.nn.Sequential, block: int):
        super().__init__(*out_layers)  # the same module objects: state-dict keys stay out_layers.0 … 3
        self.pnp_block = int(block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = super().forward(x)
        options = _CALL_OPTIONS.get()
        session = options.get(PNP_SESSION_KEY) if options else None
        return h if session is None else session.residual(self.pnp_block, h, options)


def residual_patches(get_object) -> dict[str, PnPResidual]:
    """Object patches for the three recorded ResBlocks; `get_object(name)` reads the model's current module."""
    patches = {}
    for block in RESIDUAL_BLOCKS:
        name = residual_object_name(block)
        patches[name] = PnPResidual(get_object(name), block)
    return patches


def call_context_wrapper(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: run the UNet with its transformer_options visible to `PnPResidual`."""
    options = args[5] if len(args) > 5 else kwargs.get("transformer_options")
    token = _CALL_OPTIONS.set(options if isinstance(options, dict) else None)
    try:
        return executor(*args, **kwargs)
    finally:
        _CALL_OPTIONS.reset(token)
