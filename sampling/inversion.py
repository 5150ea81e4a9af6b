"""The INVERSION record passed from VideoGrainInvert to VideoGrainSampler, and its input hash."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .pnp_features import PnPFeatures


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
    - `key`: the disk-cache key of the inputs (`sampling.cache.inversion_cache_key`), "" when none.
    - `pnp`: the PnP features recorded for the first editing steps (`sampling.pnp_features`), or None.
    """

    latent_T: torch.Tensor
    source: torch.Tensor
    trajectory: torch.Tensor
    sigmas: torch.Tensor
    steps: int
    key: str = ""
    pnp: PnPFeatures | None = None

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
