"""SD1.5 noise schedule in ComfyUI's σ parametrisation, and VideoGrain's time factor.

ComfyUI's latent is x = x_vp / sqrt(ᾱ) with σ = sqrt((1 − ᾱ) / ᾱ); a DDIM step (η = 0) is then an
Euler step x ← x + (σ_next − σ)·ε̂ in either direction (spec §3).
"""
from __future__ import annotations

import torch

NUM_TRAIN_STEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012  # scaled_linear, as SD1.5 was trained


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0…999 (float64)."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, NUM_TRAIN_STEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def sigmas_table() -> torch.Tensor:
    """σ_t for t = 0…999 (float64)."""
    a = alphas_cumprod()
    return ((1.0 - a) / a).sqrt()


def ddim_timesteps(steps: int) -> list[int]:
    """DDIM "leading" timesteps with steps_offset 1, descending: 50 steps → 981, 961, …, 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ratio = NUM_TRAIN_STEPS // steps
    return [i * ratio + 1 for i in range(steps)][::-1]


def editing_sigmas(steps: int) -> torch.Tensor:
    """σ at the DDIM timesteps followed by a final 0 (spec quirk 14): the editing schedule."""
    table = sigmas_table()
    return torch.cat([table[ddim_timesteps(steps)], torch.zeros(1, dtype=torch.float64)]).float()


def sigma_to_timestep(sigma: float | torch.Tensor) -> int:
    """The discrete training timestep whose σ is closest to `sigma` (in log space)."""
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)[0].clamp_min(1e-8)
    return int((sigmas_table().log() - s.log()).abs().argmin())


def time_factor(t: int | float) -> float:
    """VideoGrain's τ(t) = ((t − 1) / 1000)^5 (spec §3)."""
    return max(float(t) - 1.0, 0.0) ** 5 / NUM_TRAIN_STEPS ** 5


def step_index(sample_sigmas: torch.Tensor, sigma: float | torch.Tensor) -> int:
    """Index of the current step in the run's schedule, from the σ ComfyUI passes to the model."""
    s = float(torch.as_tensor(sigma).reshape(-1)[0])
    return int((sample_sigmas.reshape(-1).double().cpu() - s).abs().argmin())
