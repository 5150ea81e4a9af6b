"""The dense ST-Layout Attn reference (docs/design.md §5.1, §5.5) against the formula written out by hand."""
import math

import pytest
import torch

from videograin.attention.reference import (modulated_attention_reference, modulated_probs,
                                             modulated_scores, positive_pairs)
from videograin.attention.spacetime import spacetime_attention


def naive_scores(q, k, heads, q_bits, k_bits, weight):
    """Per-element loops over plain Python floats: s' of docs/design.md §5.1 for every (b, head, i, j)."""
    b_size, nq, channels = q.shape
    nk, d = k.shape[1], channels // heads
    out = torch.zeros(b_size, heads, nq, nk, dtype=torch.float64)
    for b in range(b_size):
        for h in range(heads):
            for i in range(nq):
                row = []
                for j in range(nk):
                    dot = sum(float(q[b, i, h * d + c]) * float(k[b, j, h * d + c]) for c in range(d))
                    row.append(dot / math.sqrt(d))
                top, bottom, w = max(row), min(row), float(weight[i])
                for j, s in enumerate(row):
                    if int(q_bits[i]) & int(k_bits[j]):
                        out[b, h, i, j] = s + w * (top - s)
                    else:
                        out[b, h, i, j] = s - w * (s - bottom)
    return out


def naive_attention(q, k, v, heads, q_bits, k_bits, weight):
    scores = naive_scores(q, k, heads, q_bits, k_bits, weight)
    probs = torch.softmax(scores, dim=-1)
    b_size, nk, channels = v.shape
    d = channels // heads
    vh = v.double().reshape(b_size, nk, heads, d).transpose(1, 2)
    return (probs @ vh).transpose(1, 2).reshape(b_size, -1, channels)


def _random_case(seed, b=2, nq=5, nk=4, heads=2, d=3, bits=3):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, nq, heads * d, generator=g)
    k = torch.randn(b, nk, heads * d, generator=g)
    v = torch.randn(b, nk, heads * d, generator=g)
    q_bits = torch.randint(0, 2 ** bits, (nq,), generator=g)
    k_bits = torch.randint(0, 2 ** bits, (nk,), generator=g)
    weight = torch.rand(nq, generator=g) * 1.6 - 0.3  # includes w < 0 and w > 1: applied unclamped
    return q, k, v, q_bits, k_bits, weight


@pytest.mark.parametrize("seed", range(4))
def test_reference_matches_naive_loop(seed):
    q, k, v, q_bits, k_bits, weight = _random_case(seed)
    expected = naive_scores(q, k, 2, q_bits, k_bits, weight)
    got = modulated_scores(q, k, 2, q_bits, k_bits, weight)
    assert got.dtype == torch.float32 and got.shape == (2, 2, 5, 4)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(modulated_probs(q, k, 2, q_bits, k_bits, weight).double(),
                               torch.softmax(expected, -1), atol=1e-6, rtol=1e-5)
    out = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight, query_chunk=2)
    torch.testing.assert_close(out.double(), naive_attention(q, k, v, 2, q_bits, k_bits, weight),
                               atol=1e-5, rtol=1e-5)


def _one_dim(values):
    """q = [1] and k = values with one head of dim 1: the scores are exactly `values`."""
    q = torch.ones(1, 1, 1)
    k = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1)
    return q, k


def test_positive_pairs_move_to_row_max_and_negatives_to_row_min_by_w():
    q, k = _one_dim([0.0, 1.0, 2.0, 4.0, 3.0])
    k_bits = torch.tensor([0, 1, 2, 1, 4])   # keys 1 and 3 share region 0 with the query
    q_bits = torch.tensor([1])
    s = modulated_scores(q, k, 1, q_bits, k_bits, torch.tensor([0.5]))[0, 0, 0]
    # M = 4, m = 0: positives 1 -> 1 + 0.5·3, 4 -> 4; negatives 0 -> 0, 2 -> 2 − 0.5·2, 3 -> 3 − 0.5·3
    assert s.tolist() == [0.0, 2.5, 1.0, 4.0, 1.5]
    for w in (0.25, 0.9):
        s = modulated_scores(q, k, 1, q_bits, k_bits, torch.tensor([w]))[0, 0, 0]
        base = torch.tensor([0.0, 1.0, 2.0, 4.0, 3.0])
        assert ((s[1] - base[1]) / (4.0 - base[1])).item() == pytest.approx(w)   # toward M by w
        assert ((base[2] - s[2]) / (base[2] - 0.0)).item() == pytest.approx(w)   # toward m by w
        assert ((base[4] - s[4]) / (base[4] - 0.0)).item() == pytest.approx(w)


def test_overlapping_regions_are_positive_through_any_shared_bit():
    q, k = _one_dim([1.0, 2.0, 3.0, 5.0, 0.0])
    q_bits = torch.tensor([0b011])                      # a part (bit 1) inside an instance (bit 0)
    k_bits = torch.tensor([0b001, 0b010, 0b110, 0b100, 0b000])
    assert positive_pairs(q_bits, k_bits).tolist() == [[True, True, True, False, False]]
    s = modulated_scores(q, k, 1, q_bits, k_bits, torch.tensor([1.0]))[0, 0, 0]
    # w = 1: positives land exactly on M = 5, negatives exactly on m = 0
    assert s.tolist() == [5.0, 5.0, 5.0, 0.0, 0.0]


@pytest.mark.parametrize("q_bit", [0b000, 0b1000])  # outside every region / a region no key is in
def test_row_without_positive_key_is_softmax_at_temperature(q_bit):
    q, k, v, _, _, _ = _random_case(7, b=1, nq=3, nk=6, heads=1, d=4)
    k_bits = torch.tensor([1, 2, 4, 0, 1, 2])
    q_bits = torch.full((3,), q_bit)
    w = torch.tensor([0.3, 0.7, -0.2])
    probs = modulated_probs(q, k, 1, q_bits, k_bits, w)[0, 0]
    s = (q[0] @ k[0].T) / 2.0
    torch.testing.assert_close(probs, torch.softmax(s * (1 - w)[:, None], -1), atol=1e-6, rtol=1e-5)


def test_padding_keys_are_negative_for_every_query():
    q, k = _one_dim([1.0, -2.0, 3.0])
    q_bits = torch.tensor([-1])                          # all 64 bits set: in every region
    k_bits = torch.tensor([1, 0, 2])                     # key 1 is padding (no region)
    s = modulated_scores(q, k, 1, q_bits, k_bits, torch.tensor([0.5]))[0, 0, 0]
    assert s.tolist() == [2.0, -2.0, 3.0]               # padding pulled to m = -2, others to M = 3


def test_tiny_region_single_token_pair():
    # Self-attention where region 2 holds one token: that token's only positive key is itself.
    q, _, v, _, _, _ = _random_case(3, b=1, nq=6, nk=6, heads=1, d=4)
    bits = torch.tensor([1, 1, 0, 2, 1, 0])
    w = torch.full((6,), 0.6)
    s = modulated_scores(q, q, 1, bits, bits, w)[0, 0]
    raw = (q[0] @ q[0].T) / 2.0
    row = raw[3]
    expected = torch.where(torch.arange(6) == 3, row + 0.6 * (row.max() - row), row - 0.6 * (row - row.min()))
    torch.testing.assert_close(s[3], expected)


def test_empty_region_bit_changes_nothing():
    q, k, v, q_bits, k_bits, weight = _random_case(11, bits=2)
    # Bit 5 is a region no key belongs to: setting it on every query changes no pair and no output.
    unused = q_bits | (1 << 5)
    a = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight)
    b = modulated_attention_reference(q, k, v, 2, unused, k_bits, weight)
    assert torch.equal(a, b)


def test_weight_zero_is_exactly_plain_attention():
    q, k, v, q_bits, k_bits, _ = _random_case(5, b=2, nq=9, nk=7, heads=2, d=4)
    zero = torch.zeros(9)
    probs = modulated_probs(q, k, 2, q_bits, k_bits, zero)
    qh = q.reshape(2, 9, 2, 4).transpose(1, 2)
    kh = k.reshape(2, 7, 2, 4).transpose(1, 2)
    plain = torch.softmax((qh @ kh.transpose(-1, -2)) / 2.0, dim=-1)
    assert torch.equal(probs, plain)
    out = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, zero)
    vh = v.reshape(2, 7, 2, 4).transpose(1, 2)
    assert torch.equal(out, (plain @ vh).transpose(1, 2).reshape(2, 9, 8))
    torch.testing.assert_close(out, spacetime_attention(q, k, v, 2), atol=1e-5, rtol=1e-5)


def test_batch_elements_are_independent_sequences():
    q, k, v, q_bits, k_bits, weight = _random_case(9, b=3, nq=6, nk=5)
    together = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight)
    for b in range(3):
        alone = modulated_attention_reference(q[b:b + 1], k[b:b + 1], v[b:b + 1], 2, q_bits, k_bits, weight)
        torch.testing.assert_close(together[b:b + 1], alone, atol=1e-6, rtol=1e-6)


def test_query_chunk_does_not_change_the_result_and_dtype_is_kept():
    q, k, v, q_bits, k_bits, weight = _random_case(2, b=1, nq=37, nk=20, heads=2, d=4)
    whole = modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight, query_chunk=1024)
    for chunk in (1, 5, 36):
        torch.testing.assert_close(modulated_attention_reference(q, k, v, 2, q_bits, k_bits, weight, chunk),
                                   whole, atol=1e-6, rtol=1e-6)
    half = modulated_attention_reference(q.bfloat16(), k.bfloat16(), v.bfloat16(), 2, q_bits, k_bits, weight)
    assert half.dtype == torch.bfloat16


def test_scalar_weight_broadcasts_and_bad_shapes_are_refused():
    q, k, v, q_bits, k_bits, weight = _random_case(4)
    torch.testing.assert_close(modulated_scores(q, k, 2, q_bits, k_bits, 0.4),
                               modulated_scores(q, k, 2, q_bits, k_bits, torch.full((5,), 0.4)))
    with pytest.raises(ValueError, match="q_bits"):
        modulated_scores(q, k, 2, q_bits[:3], k_bits, weight)
    with pytest.raises(ValueError, match="weight"):
        modulated_scores(q, k, 2, q_bits, k_bits, weight[:2])
    with pytest.raises(ValueError, match="integer"):
        modulated_scores(q, k, 2, q_bits.float(), k_bits, weight)
    with pytest.raises(ValueError, match="heads"):
        modulated_scores(q, k, 4, q_bits, k_bits, weight)
