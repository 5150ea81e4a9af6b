"""The INVERSION record passed from VideoGrainInvert to VideoGrainSampler, and its input hash."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(eq=False)
class Inversion:
    """Everything the edit needs from a DDIM inversion. All tensors live on the CPU.

    - `latent_T`: the inverted latent at the first editing level, LATENT-space (unscaled, like
      ComfyUI's LATENT["samples"]), [F, C, h, w]; core samplers can start from it.
    - `source`: the clean source latent z_src, LATENT-space (the VAEEncode output as given).
    - `trajectory`: the model-space latents at every inversion level (ComfyUI x = x_vp/sqrt(ᾱ)),
      [levels, F, C, h, w], lowest σ first; `trajectory[-1]` is `latent_T` in model space.
    - `sigmas`: the editing schedule σ_T … σ_1, 0 (float32).
    - `steps`: the step count the user asked for; `schedule_steps` is the count the schedule really has
      (more when 1000 is not a multiple of `steps`, docs/design.md §3).
    """

    latent_T: torch.Tensor
    source: torch.Tensor
    trajectory: torch.Tensor
    sigmas: torch.Tensor
    steps: int

    def __post_init__(self) -> None:
        if self.trajectory.shape[0] != len(self.sigmas) - 1:
            raise ValueError(
                f"trajectory has {self.trajectory.shape[0]} levels but the schedule has {len(self.sigmas) - 1}"
            )
        if tuple(self.trajectory.shape[1:]) != tuple(self.latent_T.shape):
            raise ValueError("trajectory latents and latent_T differ in shape")

    @property
    def frames(self) -> int:
        """Number of frames (the latent batch)."""
        return int(self.latent_T.shape[0])

    @property
    def schedule_steps(self) -> int:
        """DDIM steps the schedule really runs (`len(sigmas) - 1`)."""
        return len(self.sigmas) - 1

    @property
    def trajectory_sigmas(self) -> torch.Tensor:
        """σ of each trajectory level, increasing (the editing schedule reversed, without its 0)."""
        return self.sigmas[:-1].flip(0)

    def __deepcopy__(self, memo: dict) -> "Inversion":
        # Immutable by convention; ComfyUI's caches may deepcopy outputs, which must not duplicate the
        # trajectory (tens of MB).
        return self


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    """Hash plain data and tensors by content, with type tags so that different structures differ."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif obj is None or isinstance(obj, (bool, int, str)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, float):
        h.update(f"float:{obj.hex() if math.isfinite(obj) else obj!r};".encode())
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}[{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, dict):
        h.update(f"dict{{{len(obj)}".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b"}")
    else:
        raise TypeError(f"cannot hash {type(obj).__name__}; describe it as plain data first")


def inversion_key(latent: torch.Tensor, conditioning: Any, steps: int, model_identity: str) -> str:
    """sha256 over what determines an inversion: the source latent (dtype, shape, bytes), the
    conditioning described as plain data and tensors (the caller flattens objects such as ControlNets
    into their inputs), the step count, and a string naming the model (weights and patches)."""
    h = hashlib.sha256(b"videograin-inversion-v1;")
    _feed(h, latent)
    _feed(h, conditioning)
    _feed(h, int(steps))
    _feed(h, str(model_identity))
    return h.hexdigest()
