"""DDIM (η = 0) loops in ComfyUI's σ parametrisation: inversion up the schedule, editing down it.

Both loops drive a denoiser `denoise(x, sigma) -> x0_pred` in k-diffusion's convention: the latent is
x = x_vp / sqrt(ᾱ), the noise estimate is eps = (x − x0_pred) / σ, and one DDIM step (η = 0) is the
Euler step x ← x + (σ_next − σ)·eps, in either direction (docs/design.md §3).

`sample` performs the same tensor operations, in the same order, as core's `sample_euler` (the "ddim"
sampler): d = (x − x0)/σ, then x + d·(σ_next − σ), with σ taken as the schedule's own 0-d tensors. Without
a blend it therefore equals a core SamplerCustom run bit for bit.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .schedule import inv_sqrt_alpha_bar

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""`denoise(x, sigma)` → predicted clean latent; `sigma` is a 0-d tensor of the schedule."""
OnStep = Callable[[int, torch.Tensor, torch.Tensor], None]
"""`on_step(i, x, x0_pred)`, called once per step after the model call, before the update."""
Blend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""`blend(i, x_after_step, sigma, sigma_next)` → the latent to continue from."""

# Trajectories up to this size stay on the latent's device (cheap to index during the edit); larger ones
# (long clips at full size: 16 frames of 64×64 take 1 MiB per level, so this is ~250 levels of such a
# clip or a few very large clips) go to host memory so that inversion never competes with the UNet for
# GPU memory.
TRAJECTORY_DEVICE_LIMIT_BYTES = 256 * 2 ** 20


def wait_for_step(x: torch.Tensor) -> None:
    """Block until the device has finished the model call that produced `x` (a no-op on the CPU).

    The inversion loop has no other point where the CPU waits for the GPU (the editing loop waits in
    ST-Layout's step lookup), so without it the progress bar ran up to a step ahead of the GPU and then sat
    at 100 %, and step times read from it were launch times (docs/design.md §16). The nodes' step hook calls
    it in both loops: one wait per model call, which the editing loop already paid.
    """
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)


def _euler(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    # Written exactly as k-diffusion's to_d + Euler update so that results match core bit for bit.
    d = (x - x0) / sigma.reshape((1,) * x.ndim)
    return x + d * (sigma_next - sigma)


def trajectory_stays_on_device(x: torch.Tensor, levels: int) -> bool:
    """Whether a trajectory of `levels` latents shaped like `x` is small enough to keep on x's device."""
    return x.numel() * x.element_size() * levels <= TRAJECTORY_DEVICE_LIMIT_BYTES


def invert(
    denoise: Denoiser,
    x_clean: torch.Tensor,
    sigmas_up: torch.Tensor,
    on_step: Optional[OnStep] = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """DDIM inversion: climb `sigmas_up` (increasing, all > 0) from the clean latent `x_clean`.

    The clean latent counts as the first level (official: the clean latent is "t = 1"), so the start is
    x = z·sqrt(1 + σ_0²), i.e. x_vp = z at that level. Returns (x at the last level, the latents at every
    level, first to last). The trajectory stays on x's device when it fits `TRAJECTORY_DEVICE_LIMIT_BYTES`,
    otherwise each level is copied to the CPU as it is produced.
    """
    if sigmas_up.ndim != 1 or len(sigmas_up) < 1:
        raise ValueError("sigmas_up must be a non-empty 1-D tensor")
    if bool((sigmas_up <= 0).any()) or bool((sigmas_up[1:] <= sigmas_up[:-1]).any()):
        raise ValueError("sigmas_up must be strictly increasing and positive")
    x = x_clean * inv_sqrt_alpha_bar(sigmas_up[0].to(x_clean.dtype))
    keep = trajectory_stays_on_device(x, len(sigmas_up))

    def store(t: torch.Tensor) -> torch.Tensor:
        return t if keep else t.to("cpu")

    trajectory = [store(x)]
    for i in range(len(sigmas_up) - 1):
        sigma, sigma_next = sigmas_up[i], sigmas_up[i + 1]
        x0 = denoise(x, sigma)
        if on_step is not None:
            on_step(i, x, x0)
        x = _euler(x, x0, sigma, sigma_next)
        trajectory.append(store(x))
    return x, trajectory


def sample(
    denoise: Denoiser,
    x_T: torch.Tensor,
    sigmas_down: torch.Tensor,
    blend: Optional[Blend] = None,
    on_step: Optional[OnStep] = None,
) -> torch.Tensor:
    """DDIM sampling: descend `sigmas_down` (decreasing, usually ending at 0) from `x_T`.

    After each step `blend(i, x, σ_i, σ_{i+1})` (if given) may overwrite part of the latent, e.g. the
    background preservation of `sampling.blend`.
    """
    if sigmas_down.ndim != 1 or len(sigmas_down) < 1:
        raise ValueError("sigmas_down must be a non-empty 1-D tensor")
    if bool((sigmas_down[1:] >= sigmas_down[:-1]).any()):
        raise ValueError("sigmas_down must be strictly decreasing")
    x = x_T
    for i in range(len(sigmas_down) - 1):
        sigma, sigma_next = sigmas_down[i], sigmas_down[i + 1]
        x0 = denoise(x, sigma)
        if on_step is not None:
            on_step(i, x, x0)
        x = _euler(x, x0, sigma, sigma_next)
        if blend is not None:
            x = blend(i, x, sigma, sigma_next)
    return x
