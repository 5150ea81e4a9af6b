"""DDIM inversion and sampling loops against analytic denoisers and the closed-form DDIM step."""
import copy

import pytest
import torch

from videograin.sampling import ddim, schedule
from videograin.sampling.inversion import Inversion


def _sigmas(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    down = schedule.editing_sigmas(steps).double()
    return down[:-1].flip(0), down


def test_point_mass_round_trip_retraces_the_inversion_exactly():
    # Data = one point μ: x0_pred = μ, so eps = (x − μ)/σ is constant along each ODE path and the Euler
    # (DDIM) step is exact in both directions: every level of the reconstruction equals the inversion.
    torch.manual_seed(0)
    mu = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    z = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    up, down = _sigmas(50)

    def denoise(x, sigma):
        return mu.expand_as(x)

    x_T, trajectory = ddim.invert(denoise, z, up)
    assert len(trajectory) == len(up) == 50
    assert torch.equal(trajectory[-1], x_T)
    # The clean latent counts as the first level: x_vp = z there.
    assert torch.allclose(trajectory[0] / (1 + up[0] ** 2).sqrt(), z, rtol=0, atol=1e-14)
    # Exact solution: x − μ grows like σ.
    expected_T = mu + (trajectory[0] - mu) * up[-1] / up[0]
    assert torch.allclose(x_T, expected_T, rtol=1e-12, atol=1e-12)

    seen = []
    x_final = ddim.sample(denoise, x_T, down, on_step=lambda i, x, x0: seen.append(x))
    assert len(seen) == 50
    for i, x in enumerate(seen):
        assert torch.allclose(x, trajectory[49 - i], rtol=1e-12, atol=1e-12), i
    # The step to σ = 0 lands on the prediction.
    assert torch.allclose(x_final, mu, rtol=0, atol=1e-12)


def _gaussian_round_trip_error(steps: int, s: float = 1.0) -> float:
    torch.manual_seed(1)
    mu = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    z = mu + s * torch.randn(2, 4, 8, 8, dtype=torch.float64)

    def denoise(x, sigma):
        # Exact posterior mean of x0 ~ N(μ, s²I) observed as x = x0 + σ·n.
        return mu + (s * s / (s * s + float(sigma) ** 2)) * (x - mu)

    up, down = _sigmas(steps)
    x_T, _ = ddim.invert(denoise, z, up)
    x_rec = ddim.sample(denoise, x_T, down)
    return float((x_rec - z).norm() / (z - mu).norm())


def test_gaussian_round_trip_returns_the_input_and_converges():
    # For a Gaussian the DDIM path is curved, so Euler inversion is first-order accurate: measured
    # relative errors are 0.053 at 50 steps and 0.014 at 200.
    err50 = _gaussian_round_trip_error(50)
    err200 = _gaussian_round_trip_error(200)
    print(f"gaussian round trip: 50 steps {err50:.4f}, 200 steps {err200:.4f}")  # noqa: T201
    assert err50 < 0.06
    assert err200 < 0.02
    assert err200 < err50 / 3  # first order: 4× the steps, about 4× less error


@pytest.mark.parametrize("direction", ["down", "up"])
def test_one_euler_step_is_the_closed_form_ddim_step(direction):
    # DDIM (η = 0) in x_vp terms: x_vp' = sqrt(ᾱ')·x0 + sqrt(1 − ᾱ')·eps, eps = (x_vp − sqrt(ᾱ)·x0)/sqrt(1 − ᾱ),
    # with ᾱ taken straight from the β table (independent of the σ conversion in the loops).
    abar = schedule.alphas_cumprod()
    t, t_next = (961, 941) if direction == "down" else (21, 41)
    torch.manual_seed(2)
    x_vp = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 4, dtype=torch.float64) * 0.3

    def x0_of(x, sigma):  # some non-linear denoiser, the same function of ComfyUI's x in both paths
        return torch.tanh(torch.einsum("bchw,cd->bdhw", x, weight)) + 0.1 * float(sigma)

    a, a_next = abar[t], abar[t_next]
    sigma = ((1 - a) / a).sqrt()
    sigma_next = ((1 - a_next) / a_next).sqrt()
    x = x_vp / a.sqrt()
    x0 = x0_of(x, sigma)
    eps = (x_vp - a.sqrt() * x0) / (1 - a).sqrt()
    expected_vp = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps

    if direction == "down":
        got = ddim.sample(x0_of, x, torch.stack([sigma, sigma_next]))
    else:
        got, _ = ddim.invert(x0_of, x_vp, torch.stack([sigma, sigma_next]))  # starts at x = z/sqrt(ᾱ)
    assert torch.allclose(got * a_next.sqrt(), expected_vp, rtol=1e-10, atol=1e-10)


def test_sample_matches_core_euler_arithmetic_in_float32():
    # Core's sample_euler: d = (x − x0)/σ (σ broadcast), x = x + d·(σ' − σ). Same ops → same bits.
    torch.manual_seed(3)
    sigmas = schedule.editing_sigmas(10)
    x = torch.randn(2, 4, 8, 8) * sigmas[0]

    def denoise(x, sigma):
        return torch.sin(x) * 0.5

    ref = x
    for i in range(len(sigmas) - 1):
        d = (ref - denoise(ref, sigmas[i])) / sigmas[i][(None,) * 4]
        ref = ref + d * (sigmas[i + 1] - sigmas[i])
    assert torch.equal(ddim.sample(denoise, x, sigmas), ref)


def test_hooks_see_every_step_in_order():
    up, down = _sigmas(5)
    calls, blends = [], []

    def denoise(x, sigma):
        calls.append(float(sigma))
        return torch.zeros_like(x)

    x_T, _ = ddim.invert(denoise, torch.ones(1, 4, 2, 2, dtype=torch.float64), up,
                         on_step=lambda i, x, x0: blends.append(("inv", i)))
    assert calls == [float(s) for s in up[:-1]]
    assert blends == [("inv", i) for i in range(4)]

    calls.clear()

    def blend(i, x, sigma, sigma_next):
        blends.append((i, float(sigma), float(sigma_next)))
        return x * 0 + i  # the loop must continue from what the blend returns

    out = ddim.sample(denoise, x_T, down, blend=blend)
    assert calls == [float(s) for s in down[:-1]]
    assert blends[4:] == [(i, float(down[i]), float(down[i + 1])) for i in range(5)]
    assert torch.equal(out, torch.full_like(out, 4.0))


def test_bad_schedules_are_refused():
    x = torch.zeros(1, 4, 2, 2)
    with pytest.raises(ValueError):
        ddim.invert(lambda x, s: x, x, torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError):
        ddim.invert(lambda x, s: x, x, torch.tensor([0.0, 0.2]))
    with pytest.raises(ValueError):
        ddim.sample(lambda x, s: x, x, torch.tensor([0.2, 0.5]))


def test_trajectory_placement_threshold():
    one_level = torch.empty(16, 4, 64, 64)  # 1 MiB: 16 frames at 512²
    assert ddim.trajectory_stays_on_device(one_level, 50)
    big = torch.empty(64, 4, 128, 128)  # 16 MiB per level: 64 frames at 1024²
    assert not ddim.trajectory_stays_on_device(big, 50)
    assert ddim.trajectory_stays_on_device(big, 16)
    assert not ddim.trajectory_stays_on_device(big, 17)


# --- the INVERSION record ---------------------------------------------------------------------------

def _record(levels: int = 3) -> Inversion:
    sigmas = torch.tensor([3.0, 2.0, 1.0, 0.0])[-(levels + 1):]
    latent = torch.randn(2, 4, 3, 3)
    return Inversion(latent_T=latent, source=torch.randn(2, 4, 3, 3), trajectory=torch.randn(levels, 2, 4, 3, 3),
                     sigmas=sigmas, steps=levels)


def test_inversion_record_shape_checks_and_deepcopy():
    rec = _record()
    assert rec.frames == 2
    assert torch.equal(rec.trajectory_sigmas, torch.tensor([1.0, 2.0, 3.0]))
    assert copy.deepcopy(rec) is rec
    with pytest.raises(ValueError):
        Inversion(latent_T=rec.latent_T, source=rec.source, trajectory=rec.trajectory[:2], sigmas=rec.sigmas,
                  steps=3)
    with pytest.raises(ValueError):
        Inversion(latent_T=rec.latent_T[:1], source=rec.source, trajectory=rec.trajectory, sigmas=rec.sigmas,
                  steps=3)


def test_wait_for_step_synchronizes_only_a_cuda_device(monkeypatch):
    """The inversion loop's only CPU/GPU wait: a CUDA result blocks on its own device, a CPU one does nothing."""
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    ddim.wait_for_step(torch.zeros(2))
    assert waited == []

    class OnCuda:  # a CPU-only host has no CUDA tensor; the helper only reads `.device`
        device = torch.device("cuda", 1)

    ddim.wait_for_step(OnCuda())
    assert waited == [torch.device("cuda", 1)]
