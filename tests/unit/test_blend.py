"""Background preservation modes against hand-computed values (docs/design.md §9)."""
import pytest
import torch

from videograin.sampling import ddim, schedule
from videograin.sampling.blend import DEFAULT_MODE, BackgroundBlend, paste, source_noise_background

SIGMAS = schedule.editing_sigmas(50)  # 981, 961, …, 1, then 0
ABAR = schedule.alphas_cumprod()


def _mask(frames=2, h=4, w=4):
    m = torch.zeros(frames, 1, h, w)
    m[:, :, :, : w // 2] = 1.0  # left half is edited
    return m


def _latents(frames=2, h=4, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(frames, 4, h, w, generator=g), torch.randn(frames, 4, h, w, generator=g)


def test_default_is_the_official_formula():
    assert DEFAULT_MODE == "source_noise"


def test_source_noise_step_by_hand():
    x, z_src = _latents()
    mask = _mask()
    blend = BackgroundBlend("source_noise", mask, z_src, seed=7)
    reference = torch.Generator().manual_seed(7)

    for i in (0, 1):  # steps 981 → 961 and 961 → 941, each with fresh noise
        t, t_next = 981 - 20 * i, 961 - 20 * i
        out = blend(i, x, SIGMAS[i], SIGMAS[i + 1])
        n = torch.randn(x.shape, generator=reference)
        # Official, in x_vp terms at level t, then divided by sqrt(ᾱ_t') to be ComfyUI's x after the step.
        expected_bg = (ABAR[t].sqrt() * z_src.double() + (1 - ABAR[t]).sqrt() * n.double()) / ABAR[t_next].sqrt()
        assert torch.equal(out[:, :, :, :2], x[:, :, :, :2])
        assert torch.allclose(out[:, :, :, 2:].double(), expected_bg[:, :, :, 2:], rtol=1e-5, atol=1e-5)


def test_source_noise_is_seeded_and_fresh_each_step():
    x, z_src = _latents()
    mask = _mask()
    a = BackgroundBlend("source_noise", mask, z_src, seed=1)
    b = BackgroundBlend("source_noise", mask, z_src, seed=1)
    c = BackgroundBlend("source_noise", mask, z_src, seed=2)
    first_a, first_b, first_c = (m(0, x, SIGMAS[0], SIGMAS[1]) for m in (a, b, c))
    assert torch.equal(first_a, first_b)
    assert not torch.allclose(first_a, first_c)
    # Same level pair again: a fresh draw gives a different background.
    assert not torch.allclose(a(0, x, SIGMAS[0], SIGMAS[1]), first_a)


def test_source_noise_background_formula_in_sigma_terms():
    z, n = _latents(seed=3)
    sigma, sigma_next = torch.tensor(2.0), torch.tensor(1.5)
    # sqrt(ᾱ) = 1/sqrt(1+σ²): x_bg = (z + σ·n)·sqrt(1+σ'²)/sqrt(1+σ²)
    expected = (z + 2.0 * n) * (1 + 1.5 ** 2) ** 0.5 / (1 + 2.0 ** 2) ** 0.5
    assert torch.allclose(source_noise_background(z, n, sigma, sigma_next), expected, rtol=1e-6, atol=1e-6)


def test_inversion_path_uses_the_level_after_the_step():
    x, z_src = _latents()
    mask = _mask()
    up = SIGMAS[:-1].flip(0)
    trajectory = torch.stack([torch.full_like(x, float(j)) for j in range(len(up))])  # level j holds j
    blend = BackgroundBlend("inversion_path", mask, z_src, trajectory=trajectory, trajectory_sigmas=up)
    for i in (0, 10, 48):
        out = blend(i, x, SIGMAS[i], SIGMAS[i + 1])
        level = 48 - i  # σ_{i+1} of the edit is level 49 − (i + 1) of the inversion
        assert float(up[level]) == float(SIGMAS[i + 1])
        assert torch.equal(out[:, :, :, 2:], torch.full_like(out[:, :, :, 2:], float(level)))
        assert torch.equal(out[:, :, :, :2], x[:, :, :, :2])


def test_inversion_path_refuses_a_foreign_schedule():
    x, z_src = _latents()
    up = schedule.editing_sigmas(20)[:-1].flip(0)
    blend = BackgroundBlend("inversion_path", _mask(), z_src, trajectory=torch.zeros(len(up), *x.shape),
                            trajectory_sigmas=up)
    with pytest.raises(ValueError, match="schedules differ"):
        blend(0, x, SIGMAS[0], SIGMAS[1])  # 961 is not a level of a 20-step inversion


@pytest.mark.parametrize("mode", ["source_noise", "inversion_path"])
def test_final_step_pastes_the_clean_source(mode):
    x, z_src = _latents()
    mask = _mask()
    mask[0, 0, 0, 0] = 0.25  # a soft mask value mixes linearly
    up = SIGMAS[:-1].flip(0)
    blend = BackgroundBlend(mode, mask, z_src, trajectory=torch.randn(len(up), *x.shape), trajectory_sigmas=up)
    out = blend(49, x, SIGMAS[49], SIGMAS[50])
    assert torch.equal(out[:, :, :, 2:], z_src[:, :, :, 2:])
    assert torch.equal(out[1, :, :, :2], x[1, :, :, :2])
    assert torch.allclose(out[0, :, 0, 0], 0.25 * x[0, :, 0, 0] + 0.75 * z_src[0, :, 0, 0])
    assert torch.equal(paste(x, z_src, mask), out)


def test_off_is_the_identity():
    x, z_src = _latents()
    blend = BackgroundBlend("off", _mask(), z_src)
    assert blend(0, x, SIGMAS[0], SIGMAS[1]) is x
    assert blend(49, x, SIGMAS[49], SIGMAS[50]) is x


def test_bad_arguments():
    x, z_src = _latents()
    with pytest.raises(ValueError, match="unknown background mode"):
        BackgroundBlend("next", _mask(), z_src)
    with pytest.raises(ValueError, match="does not fit"):
        BackgroundBlend("source_noise", _mask(frames=3), z_src)
    with pytest.raises(ValueError, match=r"\[F, 1, h, w\]"):
        BackgroundBlend("source_noise", _mask()[:, 0], z_src)
    with pytest.raises(ValueError, match="needs the inversion trajectory"):
        BackgroundBlend("inversion_path", _mask(), z_src)


def test_sampling_with_blend_keeps_the_background_on_the_source():
    # A denoiser that wants to turn everything into 3.0: inside the mask it may; outside, each step is
    # overwritten by the source path and the final paste leaves exactly z_src.
    x, z_src = _latents(seed=5)
    mask = _mask()
    sigmas = schedule.editing_sigmas(10)
    x_T = z_src + sigmas[0] * x

    def denoise(x, sigma):
        return torch.full_like(x, 3.0)

    out = ddim.sample(denoise, x_T, sigmas, blend=BackgroundBlend("source_noise", mask, z_src, seed=0))
    assert torch.equal(out[:, :, :, 2:], z_src[:, :, :, 2:])
    assert torch.allclose(out[:, :, :, :2], torch.full_like(out[:, :, :, :2], 3.0))
