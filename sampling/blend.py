"""Background preservation: outside the union mask M the edit follows the source clip (docs/design.md §9).

After each editing step from level σ to σ' the latent becomes x ← M·x + (1 − M)·x_bg, with x_bg one of

- ``source_noise`` (default, the official formula): the clean source re-noised to the level *before*
  the step with fresh noise n each step, x_vp = sqrt(ᾱ_σ)·z_src + sqrt(1 − ᾱ_σ)·n, expressed at the
  level after it in ComfyUI's x = x_vp/sqrt(ᾱ): x_bg = (sqrt(ᾱ_σ)·z_src + sqrt(1 − ᾱ_σ)·n)/sqrt(ᾱ_σ'),
  where sqrt(ᾱ) = 1/sqrt(1 + σ²). The noise comes from one CPU `torch.Generator` seeded with `seed`;
  step i uses the (i+1)-th `torch.randn(x.shape)` draw of it, so a run is reproducible on any device.
  We keep it as the default because it is what the paper's results were produced with (docs/design.md quirk 6).
- ``inversion_path``: x_bg = the DDIM-inversion latent at level σ' (deterministic, no seed).
- ``off``: no blend at all (also no final paste), e.g. for a global edit or a reconstruction.

After the final step (σ' = 0) every mode but ``off`` pastes the clean z_src outside the mask instead
(docs/design.md), so the background of the result is the source latent exactly.

All latents here are in model space (ComfyUI's `process_latent_in`: z_src = VAE posterior mean × 0.18215).
"""
from __future__ import annotations

from typing import Optional

import torch

from .schedule import level_index, sqrt_alpha_bar

MODES = ("source_noise", "inversion_path", "off")
DEFAULT_MODE = "source_noise"


def source_noise_background(
    z_src: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float
) -> torch.Tensor:
    """The official background x_bg = (sqrt(ᾱ_σ)·z_src + sqrt(1 − ᾱ_σ)·n) / sqrt(ᾱ_σ')."""
    a = sqrt_alpha_bar(sigma)
    b = torch.sqrt(1.0 - a * a)
    a_next = sqrt_alpha_bar(sigma_next)
    # Coefficients in float64, applied in the latent's dtype.
    return z_src * float(a / a_next) + noise * float(b / a_next)


def paste(x: torch.Tensor, background: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """M·x + (1 − M)·background (mask broadcast over channels)."""
    return mask * x + (1.0 - mask) * background


class BackgroundBlend:
    """The per-step blend hook for `sampling.ddim.sample`.

    `mask`: union mask [F, 1, h, w] at latent size (1 = edit, 0 = keep). `z_src`: clean source latent
    [F, C, h, w]. For ``inversion_path`` also `trajectory` (the inversion latents, one per level) and
    `trajectory_sigmas` (their σ, increasing).
    """

    def __init__(
        self,
        mode: str,
        mask: torch.Tensor,
        z_src: torch.Tensor,
        seed: int = 42,
        trajectory: Optional[torch.Tensor | list[torch.Tensor]] = None,
        trajectory_sigmas: Optional[torch.Tensor] = None,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown background mode {mode!r}; expected one of {MODES}")
        if mask.ndim != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be [F, 1, h, w], got {tuple(mask.shape)}")
        if mask.shape[0] != z_src.shape[0] or mask.shape[2:] != z_src.shape[2:]:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit the latent {tuple(z_src.shape)}")
        if mode == "inversion_path":
            if trajectory is None or trajectory_sigmas is None:
                raise ValueError("inversion_path needs the inversion trajectory and its sigmas")
            if len(trajectory) != len(trajectory_sigmas):
                raise ValueError("trajectory and trajectory_sigmas differ in length")
        self.mode = mode
        self.mask = mask
        self.z_src = z_src
        self.trajectory = trajectory
        self.trajectory_sigmas = None if trajectory_sigmas is None else trajectory_sigmas.double().cpu()
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def _path_latent(self, sigma_next: torch.Tensor) -> torch.Tensor:
        j = level_index(self.trajectory_sigmas, sigma_next)
        if j is None:
            raise ValueError(f"the inversion trajectory has no level at sigma {float(sigma_next):.6g}: "
                             "schedules differ")
        return self.trajectory[j]

    def __call__(self, i: int, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return x
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        z_src = self.z_src.to(device=x.device, dtype=x.dtype)
        if float(sigma_next) == 0.0:
            return paste(x, z_src, mask)
        if self.mode == "source_noise":
            noise = torch.randn(x.shape, generator=self.generator, dtype=torch.float32)
            background = source_noise_background(z_src, noise.to(device=x.device, dtype=x.dtype), sigma, sigma_next)
        else:
            background = self._path_latent(sigma_next).to(device=x.device, dtype=x.dtype)
        return paste(x, background, mask)
