"""SD1.5 noise schedule in ComfyUI's σ parametrisation, and VideoGrain's time factor: the one home of
the σ↔ᾱ relation and of the step schedule.

ComfyUI's latent is x = x_vp / sqrt(ᾱ) with σ = sqrt((1 − ᾱ) / ᾱ), i.e. sqrt(ᾱ) = 1/sqrt(1 + σ²); a
DDIM step (η = 0) is then an Euler step x ← x + (σ_next − σ)·ε̂ in either direction (docs/design.md §3).
"""
from __future__ import annotations

import torch

NUM_TRAIN_STEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012  # scaled_linear, as SD1.5 was trained


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0…999 (float64)."""
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, NUM_TRAIN_STEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def sigma_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    """σ = sqrt((1 − ᾱ) / ᾱ)."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def inv_sqrt_alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    """1/sqrt(ᾱ) = sqrt(1 + σ²), in σ's dtype: the scale from x_vp to ComfyUI's x at level σ."""
    return torch.sqrt(1.0 + sigma ** 2)


def sqrt_alpha_bar(sigma: torch.Tensor | float) -> torch.Tensor:
    """sqrt(ᾱ) at noise level σ (float64)."""
    return 1.0 / inv_sqrt_alpha_bar(torch.as_tensor(sigma, dtype=torch.float64))


def sigmas_table() -> torch.Tensor:
    """σ_t for t = 0…999 (float64)."""
    return sigma_from_alpha_bar(alphas_cumprod())


def ddim_timesteps(steps: int) -> list[int]:
    """DDIM "leading" timesteps with steps_offset 1, descending: 50 steps → 981, 961, …, 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ratio = NUM_TRAIN_STEPS // steps
    return [i * ratio + 1 for i in range(steps)][::-1]


def editing_sigmas(steps: int, model_sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """The editing schedule σ_T … σ_1, then 0 (quirk 14), as ComfyUI's `ddim_uniform` scheduler builds it
    from a model's σ table (`model_sampling.sigmas`; default: SD1.5's, as float32 like core's buffer).

    Levels t = 1, 1 + s, 1 + 2s, … below 1000 with stride s = 1000 // steps: 50 steps give t = 981 … 1,
    exactly `ddim_timesteps`. When 1000 is not a multiple of `steps` this has more levels than asked
    (30 → 31, 7 → 8); `len(result) - 1` is the real step count. Inversion climbs the same levels.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    table = (sigmas_table().float() if model_sigmas is None else model_sigmas).detach().cpu().float()
    first = 1
    if abs(float(table[first])) <= 1e-5:  # a zero-terminal-SNR table: core then adds a step
        steps += 1
    stride = max(len(table) // steps, 1)
    levels = [float(table[t]) for t in range(first, len(table), stride)]
    tail = [] if abs(float(table[first])) <= 1e-5 else [0.0]
    return torch.tensor(levels[::-1] + tail, dtype=torch.float32)


def sigma_to_timestep(sigma: float | torch.Tensor) -> int:
    """The discrete training timestep whose σ is closest to `sigma` (in log space)."""
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)[0].clamp_min(1e-8)
    return int((sigmas_table().log() - s.log()).abs().argmin())


def time_factor(t: int | float) -> float:
    """VideoGrain's τ(t) = ((t − 1) / 1000)^5 (docs/design.md §3)."""
    return max(float(t) - 1.0, 0.0) ** 5 / NUM_TRAIN_STEPS ** 5


def step_index(sample_sigmas: torch.Tensor, sigma: float | torch.Tensor) -> int:
    """Index of the current step in the run's schedule, from the σ ComfyUI passes to the model."""
    s = float(torch.as_tensor(sigma).reshape(-1)[0])
    return int((sample_sigmas.reshape(-1).double().cpu() - s).abs().argmin())


def level_index(sigmas: torch.Tensor, sigma: float | torch.Tensor, rel: float = 1e-4) -> int | None:
    """Index of the level of `sigmas` equal to `sigma` (relative tolerance `rel`), or None when `sigma`
    is not a level of that schedule (another schedule's σ)."""
    j = step_index(sigmas, sigma)
    s = float(torch.as_tensor(sigma).reshape(-1)[0])
    return j if abs(float(sigmas.reshape(-1)[j]) - s) <= rel * max(abs(s), 1e-6) else None
