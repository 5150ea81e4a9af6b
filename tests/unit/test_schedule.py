"""The SD1.5 DDIM schedule against diffusers' DDIMScheduler, docs/design.md's numbers and ComfyUI's own
`ddim_uniform` scheduler and Euler sampler (in-process, no server)."""
import os
import pathlib
import sys

import pytest
import torch

from videograin.sampling import ddim, schedule

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]
COMFY_DIR = pathlib.Path(os.environ.get("VIDEOGRAIN_COMFYUI", PACK_DIR / ".host" / "ComfyUI"))


def _missing(what: str):
    # Locally a missing optional tool skips; in CI it is a setup failure, never a silent skip.
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} not available")


@pytest.fixture(scope="module")
def diffusers_ddim():
    try:
        from diffusers import DDIMScheduler
    except ImportError:
        _missing("diffusers")

    def make(steps):
        sched = DDIMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
        )
        sched.set_timesteps(steps)
        return sched

    return make


@pytest.fixture(scope="module")
def comfy():
    """ComfyUI's modules imported in-process on the CPU (the host from .ci/setup_host.sh)."""
    if not (COMFY_DIR / "comfy").is_dir():
        _missing(f"ComfyUI at {COMFY_DIR}")
    if str(COMFY_DIR) not in sys.path:
        sys.path.insert(0, str(COMFY_DIR))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # must precede the first import of comfy.model_management
    import comfy.k_diffusion.sampling
    import comfy.model_base
    import comfy.samplers
    import comfy.supported_models

    return comfy


@pytest.fixture(scope="module")
def sd15_sampling(comfy):
    config = comfy.supported_models.SD15({})
    return comfy.model_base.model_sampling(config, comfy.model_base.ModelType.EPS)


@pytest.mark.parametrize("steps", [50, 20])
def test_timesteps_and_alphas_match_diffusers(diffusers_ddim, steps):
    sched = diffusers_ddim(steps)
    assert schedule.ddim_timesteps(steps) == [int(t) for t in sched.timesteps]
    ours = schedule.alphas_cumprod()
    theirs = sched.alphas_cumprod.double()  # diffusers keeps float32
    assert torch.allclose(ours, theirs, rtol=2e-6, atol=0)
    # Official final level (set_alpha_to_one False): ᾱ_0, which our last σ before 0 neighbours.
    assert float(sched.final_alpha_cumprod) == pytest.approx(float(ours[0]), rel=1e-6)
    a = theirs[sched.timesteps.long()]
    sigmas = ((1 - a) / a).sqrt().float()
    # diffusers' float32 cumprod is good to ~1e-6 relative in ᾱ; σ inherits about twice that at t = 981.
    assert torch.allclose(schedule.editing_sigmas(steps)[:-1], sigmas, rtol=1e-5, atol=0)
    assert schedule.editing_sigmas(steps)[-1] == 0


def test_the_spec_numbers():
    assert schedule.ddim_timesteps(50)[:2] == [981, 961] and schedule.ddim_timesteps(50)[-1] == 1
    table = schedule.sigmas_table()
    assert float(table[981]) == pytest.approx(13.120, abs=5e-4)
    assert float(table[701]) == pytest.approx(3.348, abs=5e-4)
    assert float(table[1]) == pytest.approx(0.0413, abs=5e-5)
    assert float(table[0]) == pytest.approx(0.0292, abs=5e-5)
    assert float(schedule.alphas_cumprod()[0]) == pytest.approx(0.99915, abs=5e-6)


@pytest.mark.parametrize("steps", [50, 25, 20, 10, 4])
def test_comfy_ddim_uniform_is_the_editing_schedule(sd15_sampling, comfy, steps):
    """The nodes take ComfyUI's `ddim_uniform` σ (so core samplers started from the inversion agree with
    them); for these step counts it is exactly our schedule, and reversed without its 0 it is the
    inversion schedule."""
    core = comfy.samplers.calculate_sigmas(sd15_sampling, "ddim_uniform", steps)
    assert torch.equal(core, schedule.editing_sigmas(steps))
    up = core[:-1].flip(0)
    assert [int(sd15_sampling.timestep(s)) for s in up] == schedule.ddim_timesteps(steps)[::-1]


@pytest.mark.parametrize("steps,real", [(30, 31), (7, 8), (24, 25), (999, 999), (1000, 999), (1, 1)])
def test_editing_sigmas_is_core_ddim_uniform_also_when_steps_do_not_divide_1000(sd15_sampling, comfy, steps, real):
    # Core steps by 1000 // steps from t = 1 while t < 1000, so 30 steps (stride 33) give 31 levels where
    # diffusers' "leading" spacing gives 30. The pack's one schedule follows core (parity with core
    # samplers), and its length says the real count; the official 50 steps are unaffected.
    core = comfy.samplers.calculate_sigmas(sd15_sampling, "ddim_uniform", steps)
    ours = schedule.editing_sigmas(steps, sd15_sampling.sigmas)
    assert torch.equal(core, ours) and len(ours) - 1 == real
    assert torch.equal(ours, schedule.editing_sigmas(steps))  # SD1.5's own table gives the same


def test_core_euler_equals_our_sample_bit_for_bit(comfy):
    torch.manual_seed(4)
    sigmas = schedule.editing_sigmas(8)
    x = torch.randn(2, 4, 8, 8) * sigmas[0]

    def denoise(x, sigma):
        return torch.tanh(x) * 0.7 - 0.1

    core = comfy.k_diffusion.sampling.sample_euler(
        lambda x, s_in: denoise(x, s_in[0]), x, sigmas, disable=True
    )
    assert torch.equal(ddim.sample(denoise, x, sigmas), core)
    # And climbing with core's Euler on the reversed schedule is our inversion (after the level-1 scaling).
    up = sigmas[:-1].flip(0)
    x_clean = torch.randn(2, 4, 8, 8)
    core_up = comfy.k_diffusion.sampling.sample_euler(
        lambda x, s_in: denoise(x, s_in[0]), x_clean * torch.sqrt(1 + up[0] ** 2), up, disable=True
    )
    ours_up, _ = ddim.invert(denoise, x_clean, up)
    assert torch.equal(ours_up, core_up)
