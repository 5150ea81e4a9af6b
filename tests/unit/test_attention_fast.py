"""The fast exact ST-Layout Attn (docs/design.md §11) against the dense reference, route by route (CPU)."""
import warnings

import pytest
import torch

from videograin.attention import extrema, fast
from videograin.attention.fast import KeyGroups, choose_route, modulated_attention
from videograin.attention.reference import modulated_attention_reference
from videograin.attention.spacetime import spacetime_attention, split_heads

# Eager FlexAttention on the CPU warns that it is unfused; here it only checks the score_mod math.
pytestmark = pytest.mark.filterwarnings("ignore:.*flex_attention called without torch.compile.*")

ROUTES = ("dense", "grouped", "flex")


def _layout(kind: str, nq: int, nk: int, g: torch.Generator):
    """(q_bits, k_bits) for the layout families docs/design.md calls out."""
    if kind == "overlapping":        # three regions, bit 2 a part inside bit 1, some tokens in none
        q_bits = torch.tensor([0, 1, 2, 6])[torch.randint(0, 4, (nq,), generator=g)]
        k_bits = torch.tensor([0, 1, 2, 6])[torch.randint(0, 4, (nk,), generator=g)]
    elif kind == "empty":            # region bit 3 only among queries, no key has it
        q_bits = torch.tensor([0, 1, 8, 9])[torch.randint(0, 4, (nq,), generator=g)]
        k_bits = torch.tensor([0, 1, 2])[torch.randint(0, 3, (nk,), generator=g)]
    elif kind == "tiny":             # one key and one query form region 4
        q_bits = torch.randint(0, 2, (nq,), generator=g)
        k_bits = torch.randint(0, 2, (nk,), generator=g)
        q_bits[nq // 2] = k_bits[nk // 3] = 16
    elif kind == "padding":          # text-like keys: BOS/EOS/padding have no region
        q_bits = torch.randint(0, 8, (nq,), generator=g)
        k_bits = torch.zeros(nk, dtype=torch.long)
        k_bits[2:4], k_bits[5:7], k_bits[8:9] = 1, 2, 4
    else:
        raise ValueError(kind)
    return q_bits, k_bits


def _case(seed, b, nq, nk, heads, d, layout, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, nq, heads * d, generator=g) * 1.5
    k = torch.randn(b, nk, heads * d, generator=g) * 1.5
    v = torch.randn(b, nk, heads * d, generator=g)
    q_bits, k_bits = _layout(layout, nq, nk, g)
    weight = torch.rand(nq, generator=g) * 1.3 - 0.15     # w < 0, w > 1 and everything between
    weight[::7] = 0.0                                      # some rows unmodulated
    return q.to(dtype), k.to(dtype), v.to(dtype), q_bits, k_bits, weight


SHAPES = [  # (B, Nq, Nk, heads, d, layout): Nq != Nk, B > 1, heads 1/8, scaled-down head dims
    (1, 64, 64, 1, 5, "overlapping"),
    (2, 48, 80, 8, 10, "empty"),
    (1, 96, 96, 8, 20, "tiny"),
    (2, 40, 77, 8, 10, "padding"),       # cross-attention shape
    (1, 30, 300, 2, 16, "overlapping"),  # more keys than DENSE_MAX_KEYS: default route is not dense
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(map(str, s)))
def test_fast_equals_reference_fp32(route, shape):
    q, k, v, q_bits, k_bits, weight = _case(1, *shape)
    heads = shape[3]
    ref = modulated_attention_reference(q, k, v, heads, q_bits, k_bits, weight)
    out = modulated_attention(q, k, v, heads, q_bits, k_bits, weight, route=route)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[3], SHAPES[4]], ids=lambda s: "-".join(map(str, s)))
def test_fast_bf16_close_to_fp32_reference(route, shape):
    q, k, v, q_bits, k_bits, weight = _case(2, *shape)
    heads = shape[3]
    ref = modulated_attention_reference(q, k, v, heads, q_bits, k_bits, weight)  # fp32 inputs
    out = modulated_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), heads, q_bits, k_bits, weight, route=route)
    assert out.dtype == torch.bfloat16
    # bf16 inputs (8-bit mantissa) on logits of magnitude ~5: a few 1e-2 of the unit-scale output
    torch.testing.assert_close(out.float(), ref, atol=6e-2, rtol=5e-2)


@pytest.mark.parametrize("d", [40, 80, 160])
def test_sd15_head_dims(d):
    q, k, v, q_bits, k_bits, weight = _case(3, 1, 40, 56, 8, d, "overlapping")
    ref = modulated_attention_reference(q, k, v, 8, q_bits, k_bits, weight)
    for route in ROUTES:
        torch.testing.assert_close(modulated_attention(q, k, v, 8, q_bits, k_bits, weight, route=route), ref,
                                   atol=2e-5, rtol=2e-5)


def test_default_route_per_shape_and_result():
    q, k, v, q_bits, k_bits, weight = _case(4, *SHAPES[4])
    assert choose_route(q, k) == ("grouped" if fast._cpu_lse_kernel() else "dense")
    assert choose_route(q, k[:, :77]) == "dense"
    ref = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight)
    torch.testing.assert_close(modulated_attention(q, k, v, 2, q_bits, k_bits, weight), ref, atol=2e-5, rtol=2e-5)


def test_weight_zero_is_plain_attention():
    q, k, v, q_bits, k_bits, _ = _case(5, 2, 50, 60, 8, 10, "overlapping")
    zero = torch.zeros(50)
    assert torch.equal(modulated_attention(q, k, v, 8, q_bits, k_bits, zero), spacetime_attention(q, k, v, 8))
    for route in ROUTES:
        torch.testing.assert_close(modulated_attention(q, k, v, 8, q_bits, k_bits, zero, route=route),
                                   spacetime_attention(q, k, v, 8), atol=2e-5, rtol=2e-5)


def test_rows_with_all_keys_positive_or_none_positive_are_softmax_at_temperature():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, n, 16, generator=g) for n in (6, 300, 300))
    k_bits = torch.ones(300, dtype=torch.long)          # every key in region 0
    q_bits = torch.tensor([2, 1, 3, 2, 1, 3])           # rows 0, 3: no positive key; others: all keys positive
    w = torch.tensor([0.2, 0.5, 0.9, 0.0, 1.3, -0.4])
    s = (q[0] @ k[0].T) / 4.0
    expected = torch.softmax(s * (1 - w)[:, None], -1) @ v[0]
    for route in ROUTES:
        out = modulated_attention(q, k, v, 1, q_bits, k_bits, w, route=route)[0]
        torch.testing.assert_close(out, expected, atol=2e-5, rtol=2e-5)


def test_rows_needing_extrema_are_mixed_modulated_rows():
    q_bits = torch.tensor([0, 1, 2, 3, 1, 4])
    k_bits = torch.tensor([1, 1, 2, 0])
    w = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0, 0.5])
    groups = KeyGroups(q_bits, k_bits)
    assert groups.patterns.tolist() == [0, 1, 2]
    # row 0: no region; row 4: w = 0; row 5: region 4 has no key. Rows 1–3 have positives and negatives.
    assert groups.rows_needing_extrema(w).tolist() == [1, 2, 3]
    assert groups.keys(1).tolist() == [0, 1]


def test_row_extrema_torch_is_exact_and_chunk_independent(monkeypatch):
    g = torch.Generator().manual_seed(8)
    qh, kh = torch.randn(2, 3, 70, 12, generator=g), torch.randn(2, 3, 90, 12, generator=g)
    s = (qh @ kh.transpose(-1, -2)) * 0.5
    monkeypatch.setattr(extrema, "_CHUNK_ELEMENTS", 2 * 3 * 90 * 8)   # 8 queries per chunk
    rmax, rmin = extrema.row_extrema(qh, kh, 0.5)
    torch.testing.assert_close(rmax, s.amax(-1))
    torch.testing.assert_close(rmin, s.amin(-1))
    assert extrema._split_head_dim(80) == (64, 16) and extrema._split_head_dim(160) == (128, 32)
    assert extrema._split_head_dim(40) == (32, 16) and extrema._split_head_dim(64) == (64, 0)


@pytest.mark.parametrize("route", ["dense", "grouped"])
def test_chunked_evaluation_matches_reference(route, monkeypatch):
    q, k, v, q_bits, k_bits, weight = _case(9, 2, 90, 310, 2, 8, "overlapping")
    monkeypatch.setattr(fast, "_CHUNK_ELEMENTS", 2 * 2 * 310 * 16)   # 16-query chunks
    monkeypatch.setattr(extrema, "_CHUNK_ELEMENTS", 2 * 2 * 310 * 16)
    monkeypatch.setattr(fast, "_cpu_lse_kernel", lambda: False)      # portable log-sum-exp fallback
    ref = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight)
    torch.testing.assert_close(modulated_attention(q, k, v, 2, q_bits, k_bits, weight, route=route), ref,
                               atol=2e-5, rtol=2e-5)


def test_attention_lse_fallback_matches_direct_evaluation():
    g = torch.Generator().manual_seed(10)
    q, k, v = torch.randn(1, 2, 33, 8, generator=g), torch.randn(1, 2, 5, 8, generator=g), \
        torch.randn(1, 2, 5, 8, generator=g)
    s = (q @ k.transpose(-1, -2)) * 0.3
    out, lse = fast._attention_lse_chunked(q, k, v, 0.3)
    torch.testing.assert_close(lse, torch.logsumexp(s, -1))
    torch.testing.assert_close(out, torch.softmax(s, -1) @ v)
    out2, lse2 = fast._attention_lse(q, k, v, 0.3)       # the CPU flash kernel where torch has it
    torch.testing.assert_close(lse2, lse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out2, out, atol=1e-5, rtol=1e-5)


def test_bad_route_and_inputs_are_refused():
    q, k, v, q_bits, k_bits, weight = _case(11, *SHAPES[0])
    with pytest.raises(ValueError, match="route"):
        modulated_attention(q, k, v, 1, q_bits, k_bits, weight, route="fastest")
    with pytest.raises(ValueError, match="k_bits"):
        modulated_attention(q, k, v, 1, q_bits, k_bits[:-1], weight)


def test_flex_score_mod_matches_transformed_scores_directly():
    # The score_mod alone (β given) must equal softmax((1 − w)·s + β·P)·v written out.
    g = torch.Generator().manual_seed(12)
    qh, kh, vh = (torch.randn(1, 2, n, 8, generator=g) for n in (20, 24, 24))
    q_bits, k_bits = torch.randint(0, 4, (20,), generator=g), torch.randint(0, 4, (24,), generator=g)
    w, beta = torch.rand(20, generator=g), torch.rand(1, 2, 20, generator=g) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fast._flex(qh, kh, vh, 8 ** -0.5, q_bits, k_bits, w, beta)
    pos = ((q_bits[:, None] & k_bits[None, :]) != 0).float()
    s = (qh @ kh.transpose(-1, -2)) * 8 ** -0.5
    expected = torch.softmax(s * (1 - w)[:, None] + beta[..., None] * pos, -1) @ vh
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert split_heads(torch.zeros(1, 3, 16), 2).shape == (1, 2, 3, 8)


def test_flex_failure_falls_back_to_grouped_only_when_allowed(monkeypatch):
    q, k, v, q_bits, k_bits, weight = _case(13, *SHAPES[4])
    qh, kh, vh = (split_heads(x, 2) for x in (q, k, v))

    def broken(*args, **kwargs):
        raise fast.FlexUnavailable("no compiler here")

    monkeypatch.setattr(fast, "_flex", broken)
    monkeypatch.setattr(fast, "_warned", set())
    with pytest.warns(RuntimeWarning, match="region-grouped"):
        out = fast._flex_or_grouped(qh, kh, vh, 16 ** -0.5, q_bits, k_bits, weight, fallback=True)
    ref = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight)
    torch.testing.assert_close(fast.merge_heads(out), ref, atol=2e-5, rtol=2e-5)
    with pytest.raises(fast.FlexUnavailable):
        modulated_attention(q, k, v, 2, q_bits, k_bits, weight, route="flex")   # forced: no silent fallback
