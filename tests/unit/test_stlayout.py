"""The per-call ST-Layout logic: branch splitting, space-time attention, window, strengths, recording."""
import pytest
import torch

from videograin.attention.reference import modulated_attention_reference
from videograin.attention.spacetime import spacetime_attention
from videograin.attention.patch import AttentionPatchError, SpaceTimeSelfAttention, STLayoutAttention
from videograin.attention.recorder import RECORDER_KEY, AttentionRecorder
from videograin.attention.settings import STLayoutSettings
from videograin.masks.layout import RegionLayout
from videograin.sampling.schedule import editing_sigmas, sigma_to_timestep, time_factor

HEADS, DIM = 2, 8
F, H, W = 3, 4, 4  # frames and the layer's token grid (the latent grid is the same size here)


def make_layout() -> RegionLayout:
    masks = torch.zeros(2, F, H, W, dtype=torch.bool)
    masks[0, :, :2, :] = True          # region 0: top half
    masks[1, :, 1:3, 1:3] = True       # region 1: overlaps region 0 in row 1
    token_bits = torch.zeros(77, dtype=torch.int64)
    token_bits[2] = 1                  # token 2 owned by region 0
    token_bits[4:6] = 2                # tokens 4-5 owned by region 1
    return RegionLayout(names=["a", "b"], prompts=["x", "y"], kinds=["instance", "part"],
                        masks=masks, token_bits=token_bits)


def options(codes, step, steps=50):
    sigmas = editing_sigmas(steps)
    return {"n_heads": HEADS, "dim_head": DIM, "cond_or_uncond": codes,
            "sigmas": sigmas[step].reshape(1).repeat(len(codes) * F), "sample_sigmas": sigmas,
            "activations_shape": [len(codes) * F, HEADS * DIM, H, W]}


def qkv(batch, keys=H * W, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape_q, shape_k = (batch, H * W, HEADS * DIM), (batch, keys, HEADS * DIM)
    return (torch.randn(shape_q, generator=g) * 2, torch.randn(shape_k, generator=g) * 2,
            torch.randn(shape_k, generator=g))


def branch(x, chunk):
    return x[chunk * F:(chunk + 1) * F]


def test_spacetime_attends_over_all_frames_of_each_branch_only():
    q, k, v = qkv(2 * F)
    out = SpaceTimeSelfAttention()(q, k, v, options([1, 0], 20))
    for chunk in range(2):
        flat = [branch(t, chunk).reshape(1, F * H * W, -1) for t in (q, k, v)]
        expected = spacetime_attention(*flat, HEADS).reshape(F, H * W, -1)
        torch.testing.assert_close(branch(out, chunk), expected)
    # Changing the uncond branch (chunk 0 here) must not move the cond branch.
    q2 = q.clone()
    q2[:F] += 1.0
    k2 = k.clone()
    k2[:F] -= 1.0
    out2 = SpaceTimeSelfAttention()(q2, k2, v, options([1, 0], 20))
    torch.testing.assert_close(out2[F:], out[F:])
    assert not torch.allclose(out2[:F], out[:F])


def test_a_batch_that_is_not_whole_clips_is_refused():
    q, k, v = qkv(5)
    with pytest.raises(AttentionPatchError):
        SpaceTimeSelfAttention()(q, k, v, options([1, 0], 0))


@pytest.mark.parametrize("codes", [[1, 0], [0, 1]])
def test_self_modulation_hits_only_the_configured_branch_by_code_not_position(codes):
    layout = make_layout()
    patch = STLayoutAttention("self", layout, STLayoutSettings(self_strength=0.3, self_branch="uncond"))
    q, k, v = qkv(2 * F, seed=1)
    step = 2
    out = patch(q, k, v, options(codes, step))
    t = sigma_to_timestep(editing_sigmas(50)[step])
    weight = 0.3 * time_factor(t) * layout.self_area(H, W)
    bits = layout.query_bits(H, W)
    for chunk, code in enumerate(codes):
        flat = [branch(x, chunk).reshape(1, F * H * W, -1) for x in (q, k, v)]
        if code == 1:
            expected = modulated_attention_reference(*flat, HEADS, bits, bits, weight)
        else:
            expected = spacetime_attention(*flat, HEADS)
        torch.testing.assert_close(branch(out, chunk), expected.reshape(F, H * W, -1), rtol=1e-4, atol=1e-5)
    plain = SpaceTimeSelfAttention()(q, k, v, options(codes, step))
    uncond = codes.index(1)
    assert not torch.allclose(branch(out, uncond), branch(plain, uncond), atol=1e-4)


def test_no_modulation_outside_the_window_or_at_zero_strength():
    layout = make_layout()
    q, k, v = qkv(2 * F, seed=2)
    plain = SpaceTimeSelfAttention()(q, k, v, options([1, 0], 15))
    late = STLayoutAttention("self", layout, STLayoutSettings())(q, k, v, options([1, 0], 15))
    torch.testing.assert_close(late, plain)
    zero = STLayoutAttention("self", layout, STLayoutSettings(self_strength=0.0, self_branch="both"))
    torch.testing.assert_close(zero(q, k, v, options([1, 0], 0)), SpaceTimeSelfAttention()(q, k, v, options([1, 0], 0)))
    # The window is the first 30 % of the run's own steps: step 5 of 20 is inside, step 6 is not.
    in20 = STLayoutAttention("self", layout, STLayoutSettings(self_branch="both"))
    assert not torch.allclose(in20(q, k, v, options([1, 0], 5, 20)), SpaceTimeSelfAttention()(q, k, v, options([1, 0], 5, 20)))
    torch.testing.assert_close(in20(q, k, v, options([1, 0], 6, 20)), SpaceTimeSelfAttention()(q, k, v, options([1, 0], 6, 20)))


def test_cross_modulation_matches_reference_and_is_recorded():
    layout = make_layout()
    patch = STLayoutAttention("cross", layout, STLayoutSettings(cross_strength=1.0))
    q, k, v = qkv(2 * F, keys=77, seed=3)
    k[F:] = k[F:F + 1].expand(F, -1, -1).clone()   # every frame of a branch sees the same text
    v[F:] = v[F:F + 1].expand(F, -1, -1).clone()
    recorder = AttentionRecorder(layout)
    opts = options([1, 0], 0)
    opts[RECORDER_KEY] = recorder
    out = patch(q, k, v, opts)
    t = sigma_to_timestep(editing_sigmas(50)[0])
    weight = 1.0 * time_factor(t) * layout.cross_area(H, W)
    cond = [x[F:] for x in (q, k, v)]
    expected = modulated_attention_reference(cond[0].reshape(1, F * H * W, -1), cond[1][:1], cond[2][:1],
                                             HEADS, layout.query_bits(H, W), layout.token_bits, weight)
    torch.testing.assert_close(out[F:], expected.reshape(F, H * W, -1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[:F], spacetime_attention(q[:F], k[:F], v[:F], HEADS))  # uncond: plain
    record = recorder.result()
    assert record.counts == {"window": 1, "all": 1}
    assert record.window.shape == (2, F, H, W)
    # Modulation pulls each region's tokens into its own mask: most of the mass lands inside.
    assert (record.inside_share("modulated") > 0.5).all()


def test_frame_count_mismatch_names_the_fix():
    layout = make_layout()
    patch = STLayoutAttention("self", layout, STLayoutSettings())
    q, k, v = torch.randn(2, H * W, HEADS * DIM), torch.randn(2, H * W, HEADS * DIM), torch.randn(2, H * W, HEADS * DIM)
    opts = options([0], 0)
    with pytest.raises(AttentionPatchError, match="frames"):
        patch(q, k, v, opts)


def test_recorder_lists_blocks_the_patch_never_ran_at():
    layout = make_layout()
    recorder = AttentionRecorder(layout, [("input", 4), ("middle", 0)])
    opts = options([1, 0], 20)
    opts[RECORDER_KEY] = recorder
    opts["block"] = ("input", 4)
    q, k, v = qkv(2 * F, seed=4)
    STLayoutAttention("self", layout, STLayoutSettings())(q, k, v, opts)
    q, k, v = qkv(2 * F, keys=77, seed=5)
    STLayoutAttention("cross", layout, STLayoutSettings())(q, k, v, opts)
    assert recorder.missing() == [("cross", ("middle", 0)), ("self", ("middle", 0))]
    opts["block"] = ("middle", 0)
    STLayoutAttention("cross", layout, STLayoutSettings())(q, k, v, opts)
    assert recorder.missing() == [("self", ("middle", 0))]


# --- temporal windows in the patches (docs/design.md §16) ------------------------------------------

def _with_windows(opts, window, overlap=0, anchors=0):
    from videograin.attention.windows import WINDOWS_KEY, TemporalWindows
    return {**opts, WINDOWS_KEY: TemporalWindows(window, overlap, anchors)}


def test_windows_covering_the_clip_are_bit_identical_to_full_attention():
    q, k, v = qkv(2 * F)
    layout = make_layout()
    for patch in (SpaceTimeSelfAttention(), STLayoutAttention("self", layout, STLayoutSettings(self_branch="both"))):
        full = patch(q, k, v, options([1, 0], 0))
        assert torch.equal(patch(q, k, v, _with_windows(options([1, 0], 0), F)), full)
        assert torch.equal(patch(q, k, v, _with_windows(options([1, 0], 0), F + 5, 2, 1)), full)


def test_windows_restrict_each_branch_to_its_windows_modulated_like_full_keys():
    from videograin.attention.windows import modulated_attend, plan_windows, windowed_attention
    q, k, v = qkv(2 * F)
    layout = make_layout()
    settings = STLayoutSettings(self_branch="both")
    opts = _with_windows(options([1, 0], 0), 2, 1, 1)
    out = STLayoutAttention("self", layout, settings)(q, k, v, opts)
    assert not torch.allclose(out, STLayoutAttention("self", layout, settings)(q, k, v, options([1, 0], 0)))
    t = sigma_to_timestep(editing_sigmas(50)[0])
    weight = settings.self_strength * time_factor(t) * layout.self_area(H, W)
    bits = layout.query_bits(H, W)
    plan = plan_windows(F, 2, 1, 1)
    for chunk in range(2):
        flat = [branch(x, chunk).reshape(1, F * H * W, -1) for x in (q, k, v)]
        expected = windowed_attention(*flat, HEADS, plan, F, modulated_attend(HEADS, bits, bits, weight))
        torch.testing.assert_close(branch(out, chunk), expected.reshape(F, H * W, -1))
    plain = SpaceTimeSelfAttention()(q, k, v, opts)
    assert not torch.allclose(plain, SpaceTimeSelfAttention()(q, k, v, options([1, 0], 0)))
