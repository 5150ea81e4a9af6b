"""Temporal windows with anchor frames (docs/design.md §16): the plan, the blend and the attention (CPU)."""
import itertools
import math

import pytest
import torch

from videograin.attention.fast import modulated_attention
from videograin.attention.reference import modulated_attention_reference
from videograin.attention.spacetime import spacetime_attention, split_heads
from videograin.attention.windows import (QUANTUM, WindowError, WindowPlan, modulated_attend, plain_attend,
                                           plan_windows, windowed_attention)

# Eager FlexAttention on the CPU warns that it is unfused (route="flex" below only checks the math).
pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile.*")

COMBOS = [(f, w, o) for f in (1, 2, 3, 5, 7, 8, 9, 12, 16, 17, 24, 31)
          for w in (2, 3, 4, 5, 8, 16, 40) for o in range(0, w) if o < 8]


# ---------------------------------------------------------------- the plan

@pytest.mark.parametrize("frames,window,overlap", COMBOS)
def test_plan_covers_every_frame_with_full_windows(frames, window, overlap):
    plan = plan_windows(frames, window, overlap, 0)
    size = min(window, frames)
    assert all(stop - start == size for start, stop in plan.windows)
    assert plan.windows[0][0] == 0 and plan.windows[-1][1] == frames
    covered = set().union(*(range(s, e) for s, e in plan.windows))
    assert covered == set(range(frames))
    starts = [s for s, _ in plan.windows]
    assert starts == sorted(set(starts))                               # increasing, no duplicate window
    if frames <= window:
        assert plan.windows == ((0, frames),) and plan.single
    else:
        stride = window - overlap
        assert len(plan.windows) == math.ceil((frames - window) / stride) + 1
        assert starts[:-1] == [i * stride for i in range(len(starts) - 1)]
        # consecutive windows share at least `overlap` frames (the last one, shifted back, may share more)
        assert all(a[1] - b[0] >= overlap for a, b in zip(plan.windows, plan.windows[1:]))


@pytest.mark.parametrize("frames,window,overlap", COMBOS)
def test_blend_weights_sum_to_exactly_one(frames, window, overlap):
    plan = plan_windows(frames, window, overlap, 0)
    table = plan.blend_weights()
    assert table.shape == (len(plan.windows), frames)
    for i, (start, stop) in enumerate(plan.windows):                  # positive inside, zero outside
        assert (table[i, start:stop] > 0).all() and (table[i, :start] == 0).all() and (table[i, stop:] == 0).all()
    assert torch.equal(table.sum(0), torch.ones(frames, dtype=torch.float64))
    assert torch.equal(plan.blend_weights(torch.float32).sum(0), torch.ones(frames))
    for f in range(frames):                                            # plain Python sums, both orders
        held = [w[f - s] for (s, e), w in zip(plan.windows, plan.weights) if s <= f < e]
        assert sum(held) == 1.0 and sum(reversed(held)) == 1.0
        assert all(float(x * QUANTUM).is_integer() for x in held)


def test_blend_weights_are_linear_ramps_over_the_overlap():
    plan = plan_windows(16, 8, 4, 0)                                   # windows 0..7 and 4..11, 8..15
    assert plan.windows == ((0, 8), (4, 12), (8, 16))
    t = plan.blend_weights()
    assert t[0, :4].tolist() == [1.0] * 4 and t[2, 12:].tolist() == [1.0] * 4   # clip ends: not ramped
    ramp = [round(x, 5) for x in t[1, 4:8].tolist()]
    assert ramp == [0.2, 0.4, 0.6, 0.8]                                # (j + 1)/(o + 1), o = 4
    assert [round(x, 5) for x in t[0, 4:8].tolist()] == [0.8, 0.6, 0.4, 0.2]
    no_overlap = plan_windows(12, 4, 0, 0).blend_weights()
    assert torch.equal(no_overlap.sum(0), torch.ones(12)) and set(no_overlap.flatten().tolist()) == {0.0, 1.0}
    shifted = plan_windows(10, 4, 1, 0)                                # last window shifted back: 3 shared
    assert shifted.windows == ((0, 4), (3, 7), (6, 10))
    assert [round(x, 5) for x in shifted.blend_weights()[2, 6:7].tolist()] == [0.5]


def test_anchor_frames_spread_evenly():
    assert plan_windows(16, 4, 0, 0).anchor_frames == ()
    assert plan_windows(16, 4, 0, 1).anchor_frames == (8,)
    assert plan_windows(16, 4, 0, 2).anchor_frames == (4, 12)
    assert plan_windows(16, 4, 0, 4).anchor_frames == (2, 6, 10, 14)
    assert plan_windows(5, 2, 0, 5).anchor_frames == (0, 1, 2, 3, 4)
    for frames, anchors in itertools.product((3, 7, 16, 24, 61), range(1, 8)):
        if anchors > frames:
            continue
        a = plan_windows(frames, 2, 0, anchors).anchor_frames
        assert len(a) == anchors and list(a) == sorted(set(a)) and 0 <= a[0] and a[-1] < frames
        gaps = [y - x for x, y in zip(a, a[1:])]
        assert not gaps or max(gaps) - min(gaps) <= 1                  # as even as whole frames allow
        assert a == plan_windows(frames, 2, 0, anchors).anchor_frames   # deterministic


def test_key_frames_add_the_anchors_outside_the_window():
    plan = plan_windows(16, 4, 0, 2)                                   # anchors 4 and 12
    assert plan.key_frames(0) == (0, 1, 2, 3, 4, 12)
    assert plan.key_frames(1) == (4, 5, 6, 7, 12)                      # anchor 4 already inside: once
    assert plan.key_frames(3) == (4, 12, 13, 14, 15)


@pytest.mark.parametrize("args,name", [
    ((8, 1, 0, 0), "window"), ((8, 0, 0, 0), "window"), ((8, -3, 0, 0), "window"),
    ((8, 4, -1, 0), "overlap"), ((8, 4, 4, 0), "overlap"), ((8, 4, 7, 0), "overlap"),
    ((8, 4, 0, -1), "anchors"), ((8, 4, 0, 9), "anchors"),
    ((0, 4, 0, 0), "frames"), ((8, 4.5, 0, 0), "window"),
])
def test_bad_settings_name_the_input_and_the_fix(args, name):
    with pytest.raises(WindowError) as err:
        plan_windows(*args)
    assert isinstance(err.value, ValueError)
    assert err.value.input_name == name and str(err.value).startswith(name + ":")
    assert err.value.fix and "Fix:" in str(err.value)


def test_plan_is_frozen():
    plan = plan_windows(8, 4, 1, 1)
    assert isinstance(plan, WindowPlan)
    with pytest.raises(Exception):
        plan.window = 3


# ---------------------------------------------------------------- the attention

def _clip(seed, frames, tokens, heads=2, d=8, regions=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    n = frames * tokens
    q = torch.randn(1, n, heads * d, generator=g) * 1.5
    k = torch.randn(1, n, heads * d, generator=g) * 1.5
    v = torch.randn(1, n, heads * d, generator=g)
    bits = torch.tensor([0, 1, 2, 3, 4, 6])[torch.randint(0, 6, (n,), generator=g)]   # overlaps and none
    if regions < 3:
        bits &= (1 << regions) - 1
    weight = torch.rand(n, generator=g) * 0.8 + 0.1
    return q.to(dtype), k.to(dtype), v.to(dtype), bits, weight


def _tokens(frames, per_frame):
    return torch.cat([torch.arange(f * per_frame, (f + 1) * per_frame) for f in frames])


@pytest.mark.parametrize("frames,window", [(4, 4), (4, 8), (6, 40)])
def test_single_window_is_bit_identical_to_full_attention(frames, window):
    heads, tokens = 2, 6
    q, k, v, bits, weight = _clip(0, frames, tokens)
    plan = plan_windows(frames, window, 1, 2)
    assert plan.single
    assert torch.equal(windowed_attention(q, k, v, heads, plan, frames, plain_attend(heads)),
                       spacetime_attention(q, k, v, heads))
    for route in (None, "dense", "grouped", "flex"):
        full = modulated_attention(q, k, v, heads, bits, bits, weight, route=route)
        out = windowed_attention(q, k, v, heads, plan, frames, modulated_attend(heads, bits, bits, weight, route))
        assert torch.equal(out, full), route

    calls = []

    def spy(q_w, k_w, v_w, q_index, k_index):
        calls.append((q_w, k_w, v_w, q_index, k_index))
        return q_w * 2
    result = windowed_attention(q, k, v, heads, plan, frames, spy)
    assert len(calls) == 1 and calls[0][0] is q and calls[0][1] is k and calls[0][2] is v
    assert torch.equal(calls[0][3], torch.arange(q.shape[1])) and torch.equal(calls[0][4], torch.arange(k.shape[1]))
    assert torch.equal(result, q * 2)


def test_attend_gets_the_window_tokens_and_the_anchor_tokens():
    frames, tokens, heads = 10, 3, 2
    q, k, v, _, _ = _clip(1, frames, tokens)
    plan = plan_windows(frames, 4, 1, 2)                               # anchors 2 and 7
    seen = []

    def spy(q_w, k_w, v_w, q_index, k_index):
        seen.append((q_index, k_index))
        assert q_index.dtype == torch.long and k_index.dtype == torch.long
        assert torch.equal(q_w, q[:, q_index]) and torch.equal(k_w, k[:, k_index]) and torch.equal(v_w, v[:, k_index])
        return spacetime_attention(q_w, k_w, v_w, heads)
    out = windowed_attention(q, k, v, heads, plan, frames, spy)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert len(seen) == len(plan.windows) == 3
    for (start, stop), (q_index, k_index) in zip(plan.windows, seen):
        assert torch.equal(q_index, _tokens(range(start, stop), tokens))
        assert torch.equal(k_index, _tokens(sorted(set(range(start, stop)) | {2, 7}), tokens))
        assert (k_index[1:] > k_index[:-1]).all()                     # deduplicated, ascending


@pytest.mark.parametrize("frames,window,overlap,anchors", [(10, 4, 1, 2), (9, 4, 3, 1), (12, 5, 2, 3), (8, 3, 0, 0)])
def test_windowed_modulated_equals_the_blended_dense_reference(frames, window, overlap, anchors):
    tokens, heads = 4, 2
    q, k, v, bits, weight = _clip(2, frames, tokens)
    plan = plan_windows(frames, window, overlap, anchors)
    # The reference by hand: per window, gathered q/k/v/bits/weights through the dense oracle, blended.
    expect = torch.zeros_like(q).view(1, frames, tokens, -1)
    blend = plan.blend_weights(torch.float32)
    for i, (start, stop) in enumerate(plan.windows):
        qi = _tokens(range(start, stop), tokens)
        ki = _tokens(sorted(set(range(start, stop)) | set(plan.anchor_frames)), tokens)
        o = modulated_attention_reference(q[:, qi], k[:, ki], v[:, ki], heads, bits[qi], bits[ki], weight[qi])
        expect[:, start:stop] += o.view(1, stop - start, tokens, -1) * blend[i, start:stop, None, None]
    expect = expect.view_as(q)
    for route in ("dense", "grouped"):
        out = windowed_attention(q, k, v, heads, plan, frames, modulated_attend(heads, bits, bits, weight, route))
        torch.testing.assert_close(out, expect, atol=2e-5, rtol=2e-5)
    # and the windows really are not full attention
    full = modulated_attention_reference(q, k, v, heads, bits, bits, weight)
    assert (out - full).abs().max() > 1e-2


def test_anchor_keys_are_modulated_like_window_keys():
    """One window against a materialised masked softmax; a query whose only positive keys are anchors."""
    frames, tokens, heads, d = 8, 4, 2, 8
    q, k, v, bits, weight = _clip(3, frames, tokens, regions=2)        # bits 0..3 in every frame
    plan = plan_windows(frames, 4, 0, 2)                               # windows 0..3, 4..7; anchors 2, 6
    assert plan.windows == ((0, 4), (4, 8)) and plan.anchor_frames == (2, 6)
    q_bits, k_bits = bits.clone(), bits.clone()
    q_bits[0] = 8                                                      # query 0 of frame 0: region 3 ...
    k_bits[6 * tokens + 1] = k_bits[6 * tokens + 3] = 8                # ... shared only with anchor frame 6
    out = windowed_attention(q, k, v, heads, plan, frames, modulated_attend(heads, q_bits, k_bits, weight))

    # Window 0 written out: queries of frames 0..3, keys of frames 0..3 and anchor 6; weight 1 there.
    qi, ki = _tokens(range(4), tokens), _tokens((0, 1, 2, 3, 6), tokens)
    qh, kh, vh = (split_heads(x, heads).double() for x in (q[:, qi], k[:, ki], v[:, ki]))
    s = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    top, bottom = s.amax(-1, keepdim=True), s.amin(-1, keepdim=True)   # over window + anchor keys
    w = weight[qi].double()[:, None]
    positive = (q_bits[qi][:, None] & k_bits[ki][None, :]) != 0
    modulated = torch.where(positive, s + w * (top - s), s - w * (s - bottom))
    probs = torch.softmax(modulated, -1)
    expect = (probs @ vh).transpose(1, 2).reshape(1, len(qi), -1)
    torch.testing.assert_close(out[:, qi].double(), expect, atol=1e-5, rtol=1e-5)

    # Query 0's positive keys are exactly the two anchor tokens, and the modulation pulls mass onto them.
    anchor_keys = [j for j, idx in enumerate(ki.tolist()) if idx in (6 * tokens + 1, 6 * tokens + 3)]
    assert positive[0].nonzero().flatten().tolist() == anchor_keys
    plain = torch.softmax(s, -1)
    assert (probs[0, :, 0, anchor_keys] > plain[0, :, 0, anchor_keys]).all()
    # Dropping the anchors' bits changes query 0's output: the anchors are not plain keys.
    other = k_bits.clone()
    other[6 * tokens:7 * tokens] = 0
    changed = windowed_attention(q, k, v, heads, plan, frames, modulated_attend(heads, q_bits, other, weight))
    assert (changed[0, 0] - out[0, 0]).abs().max() > 1e-3


def test_disjoint_windows_without_anchors_are_block_diagonal_attention():
    frames, tokens, heads = 12, 5, 2
    q, k, v, _, _ = _clip(4, frames, tokens)
    plan = plan_windows(frames, 4, 0, 0)
    out = windowed_attention(q, k, v, heads, plan, frames, plain_attend(heads))
    window_of = torch.arange(frames).repeat_interleave(tokens) // 4
    mask = window_of[:, None] == window_of[None, :]                   # True: may attend
    qh, kh, vh = (split_heads(x, heads) for x in (q, k, v))
    blocked = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    torch.testing.assert_close(out, blocked.transpose(1, 2).reshape_as(q), atol=1e-5, rtol=1e-5)
    assert (out - spacetime_attention(q, k, v, heads)).abs().max() > 1e-2


def test_frames_held_by_one_window_take_its_output_unchanged():
    frames, tokens, heads = 10, 3, 2
    q, k, v, _, _ = _clip(5, frames, tokens)
    plan = plan_windows(frames, 4, 1, 1)                               # windows 0..3, 3..6, 6..9; anchor 5
    out = windowed_attention(q, k, v, heads, plan, frames, plain_attend(heads))
    first = spacetime_attention(q[:, :4 * tokens], k[:, _tokens((0, 1, 2, 3, 5), tokens)],
                                v[:, _tokens((0, 1, 2, 3, 5), tokens)], heads)
    assert torch.equal(out[:, :3 * tokens], first[:, :3 * tokens])   # frames 0..2: window 0 only


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_keep_their_dtype_and_stay_close(dtype):
    frames, tokens, heads = 9, 4, 2
    q, k, v, bits, weight = _clip(6, frames, tokens)
    plan = plan_windows(frames, 4, 2, 2)
    ref = windowed_attention(q, k, v, heads, plan, frames, modulated_attend(heads, bits, bits, weight))
    out = windowed_attention(q.to(dtype), k.to(dtype), v.to(dtype), heads, plan, frames,
                             modulated_attend(heads, bits, bits, weight))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, atol=6e-2, rtol=5e-2)


def test_cost_grows_linearly_in_frames():
    tokens, heads = 2, 1
    pairs = {}
    for frames in (16, 64):
        q, k, v, _, _ = _clip(7, frames, tokens, heads=1, d=4)
        count = [0]

        def spy(q_w, k_w, v_w, q_index, k_index):
            count[0] += q_w.shape[1] * k_w.shape[1]
            assert k_w.shape[1] <= (8 + 2) * tokens                   # a window never sees more than W + A frames
            return spacetime_attention(q_w, k_w, v_w, heads)
        windowed_attention(q, k, v, heads, plan_windows(frames, 8, 2, 2), frames, spy)
        pairs[frames] = count[0]
    assert pairs[64] <= 4.2 * pairs[16]                               # linear: ×4 frames, not ×16


def test_mismatched_inputs_are_refused():
    q, k, v, _, _ = _clip(8, 6, 3)
    plan = plan_windows(6, 4, 1, 0)
    with pytest.raises(WindowError, match="frames"):
        windowed_attention(q, k, v, 2, plan, 5, plain_attend(2))
    with pytest.raises(ValueError, match="do not split"):
        windowed_attention(q[:, :-1], k, v, 2, plan, 6, plain_attend(2))
