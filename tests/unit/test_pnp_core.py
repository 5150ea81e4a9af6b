"""PnP core: the feature formula, the step offset, the session's record/inject swap, the residual patch."""
import pytest
import torch

from videograin.attention.patch import PNP_SESSION_KEY
from videograin.attention.pnp import PnPError, PnPResidual, PnPSession, call_context_wrapper
from videograin.masks.layout import attention_sizes
from videograin.sampling.pnp_features import PnPFeatures, expected_bytes, feature_names
from videograin.sampling.schedule import editing_sigmas


def test_formula_gives_the_official_0_59_gb_per_step_at_16_frames_512():
    per_step = expected_bytes(16, attention_sizes((64, 64)), 320, 1, 2)
    assert per_step == 16 * 2 * 2 * 9_175_040  # frames × halves × fp16 bytes × elements per frame
    assert round(per_step / 1e9, 2) == 0.59
    assert expected_bytes(16, attention_sizes((64, 64)), 320, 5, 2) == 5 * per_step


def _features(k=2, frames=2, steps=5):
    return PnPFeatures(k, frames, editing_sigmas(steps))


def test_record_serves_the_step_above_and_inject_the_step_itself():
    sigmas = editing_sigmas(5)                      # σ_0 > … > σ_4 > 0
    rec, inj = PnPSession("record", _features()), PnPSession("inject", _features())
    # The inversion call at σ_{i+1} is recorded for editing step i (the official one-step offset).
    assert [rec.step({"sigmas": sigmas[j]}) for j in range(5)] == [None, 0, 1, None, None]
    assert [inj.step({"sigmas": sigmas[j]}) for j in range(5)] == [0, 1, None, None, None]
    assert inj.step({"sigmas": torch.tensor(123.0)}) is None   # not a level of this schedule
    assert inj.step({}) is None


def test_session_records_per_half_and_swaps_back_by_half():
    sigmas = editing_sigmas(5)
    features = _features()
    rec = PnPSession("record", features)
    q = torch.arange(2 * 2 * 6 * 4, dtype=torch.float32).reshape(4, 6, 4)   # [uncond F=2, cond F=2]
    k = -q
    opts = {"sigmas": sigmas[1], "cond_or_uncond": [1, 0], "block": ("output", 4)}
    q_out, k_out = rec.qk(q, k, opts)
    assert q_out is q and k_out is k                         # recording never changes the call
    assert torch.equal(features.get(0, 1, "q4"), q[:2]) and torch.equal(features.get(0, 0, "k4"), k[2:])
    assert rec.qk(q, k, {**opts, "block": ("output", 10)}) == (q, k)   # not a PnP block: nothing kept
    assert features.get(0, 0, "q10") is None

    inj = PnPSession("inject", features)
    fresh = torch.zeros_like(q)
    # In the edit the halves may come in the other order; each gets its own recording.
    q_in, k_in = inj.qk(fresh, fresh, {"sigmas": sigmas[0], "cond_or_uncond": [0, 1], "block": ("output", 4)})
    assert torch.equal(q_in, torch.cat([q[2:], q[:2]])) and torch.equal(k_in, torch.cat([k[2:], k[:2]]))
    assert inj.injected == {(0, 0, "q4"), (0, 1, "q4"), (0, 0, "k4"), (0, 1, "k4")}
    later = inj.qk(fresh, fresh, {"sigmas": sigmas[2], "cond_or_uncond": [0, 1], "block": ("output", 4)})
    assert later[0] is fresh                                  # step 2 ≥ inject_step: untouched
    with pytest.raises(PnPError, match="another clip"):
        inj.qk(torch.zeros(4, 7, 4), torch.zeros(4, 7, 4), {"sigmas": sigmas[0], "cond_or_uncond": [0, 1],
                                                             "block": ("output", 4)})


def test_features_round_trip_through_cache_extras_and_report_missing():
    features = _features(k=1, frames=1)
    for half in (0, 1):
        for name in feature_names():
            features.put(0, half, name, torch.full((1, 3), float(half)))
    assert features.missing() == []
    back = PnPFeatures.from_extra(features.to_extra(), features.meta(), features.sigmas)
    assert back is not None and back.nbytes == features.nbytes and torch.equal(back.get(0, 1, "res6"),
                                                                               features.get(0, 1, "res6"))
    partial = {k: v for k, v in features.to_extra().items() if not k.endswith("/k9")}
    assert PnPFeatures.from_extra(partial, features.meta(), features.sigmas) is None
    assert PnPFeatures.from_extra({}, {}, features.sigmas) is None


def test_residual_patch_keeps_weight_keys_and_is_identity_without_a_session():
    torch.manual_seed(0)
    out_layers = torch.nn.Sequential(torch.nn.GroupNorm(2, 4), torch.nn.SiLU(), torch.nn.Dropout(0.0),
                                     torch.nn.Conv2d(4, 4, 3, padding=1))
    patched = PnPResidual(out_layers, 3)
    assert list(patched.state_dict()) == list(out_layers.state_dict())
    assert patched[3] is out_layers[3]                        # the same modules, not copies
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(patched(x), out_layers(x))

    sigmas = editing_sigmas(5)
    features = _features(k=1, frames=2)
    saved = torch.randn(2, 4, 5, 5)
    features.put(0, 0, "res3", saved)
    options = {"sigmas": sigmas[0], "cond_or_uncond": [0], PNP_SESSION_KEY: PnPSession("inject", features)}
    # The DIFFUSION_MODEL wrapper makes the call's options visible to the patch (6th positional argument).
    got = call_context_wrapper(lambda *a, **kw: patched(x), x, None, None, None, None, options)
    assert torch.equal(got, saved)
    assert torch.equal(patched(x), out_layers(x))             # outside the wrapped call: identity again
