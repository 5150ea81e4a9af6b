"""Region-prompt binding: span search, ownership, splicing and the binding errors (docs/design.md §4)."""
import logging

import pytest
import torch

from videograin.binding.bits import MAX_TOKENS, pack_bits, token_bits, token_owner
from videograin.binding.prompts import (SD_BOS, SD_EOS, PromptBindingError, bind_prompts, find_span, has_weight_syntax,
                                        occurrences, splice, split_occurrence, word_tokens)

_VOCAB: dict[str, int] = {}


def fake_tokenize(text: str) -> tuple[list[int], int]:
    """Whitespace tokenizer with CLIP's framing: BOS, word ids, EOS, EOS-padding to 77.

    Returns the first 77-token row and the full token count (BOS and EOS included).
    """
    ids = [_VOCAB.setdefault(word, 1000 + len(_VOCAB)) for word in text.lower().split()]
    row = [SD_BOS] + ids + [SD_EOS]
    count = len(row)
    row = row[:MAX_TOKENS - 1] + [SD_EOS] if count > MAX_TOKENS else row
    return row + [SD_EOS] * (MAX_TOKENS - len(row)), count


def fake_encode(row: list[int], channels: int = 6, seed: int = 0) -> torch.Tensor:
    """Context-dependent fake encoder: each row mixes its id with a per-prompt seed and position."""
    ids = torch.tensor(row, dtype=torch.float64)
    pos = torch.arange(len(row), dtype=torch.float64)
    ch = torch.arange(channels, dtype=torch.float64)
    return torch.sin(ids[:, None] * 0.001 * (ch + 1) + pos[:, None] * 0.1 + seed)[None].float()


def text_of(prompt: str) -> str:
    try:
        return split_occurrence(prompt)[0]
    except PromptBindingError:
        return prompt  # a bad suffix: bind_prompts must refuse it itself


def bind(global_prompt: str, *locals_: str, rule: str = "next_free", notes: list | None = None):
    g_row, g_n = fake_tokenize(global_prompt)
    rows = [fake_tokenize(text_of(p)) for p in locals_]  # the node tokenises the text without '#N'
    return bind_prompts(global_prompt, g_row, list(locals_), [r for r, _ in rows],
                        global_tokens=g_n, local_tokens=[n for _, n in rows], rule=rule, notes=notes)


def test_find_span_first_occurrence_excluding_specials():
    g, _ = fake_tokenize("iron man and spider man jog under trees")
    assert find_span(g, fake_tokenize("iron man")[0]) == (1, 2)
    assert find_span(g, fake_tokenize("spider man")[0]) == (4, 2)
    assert find_span(g, fake_tokenize("man")[0]) == (2, 1)          # first of two
    assert find_span(g, fake_tokenize("trees")[0]) == (8, 1)
    assert find_span(g, fake_tokenize("man spider")[0]) is None     # order matters
    assert find_span(g, fake_tokenize("")[0]) is None               # no words
    # word lists without framing work too
    assert find_span(g, [_VOCAB["under"], _VOCAB["trees"]]) == (7, 2)


def test_find_span_generic_specials_and_keys():
    # keys need only be hashable (embedding tokens arrive as digests); specials are caller-defined
    g = [0, "a", ("emb", "x"), "b", 9, 9]
    assert find_span(g, [0, ("emb", "x"), "b", 9, 9], specials=(0, 9)) == (2, 2)
    assert word_tokens([0, "a", 9], specials=(0, 9)) == ["a"]


def test_token_owner_and_bits():
    spans = [(1, 2), None, (4, 3)]
    owner = token_owner(spans)
    assert owner.dtype == torch.long and owner.shape == (MAX_TOKENS,)
    expected = torch.full((MAX_TOKENS,), -1)
    expected[1:3] = 0
    expected[4:7] = 2
    assert torch.equal(owner, expected)
    bits = token_bits(spans)
    assert bits[0] == 0 and bits[1] == 1 and bits[2] == 1 and bits[3] == 0
    assert bits[4] == 4 and bits[6] == 4 and bits[7] == 0 and bits[-1] == 0
    with pytest.raises(ValueError):
        token_owner([(1, 2), (2, 2)])


def test_token_bits_high_region_index():
    spans = [None] * 62 + [(5, 1)]
    bits = token_bits(spans)
    assert bits[5] == 1 << 62 and bits[5] > 0
    with pytest.raises(ValueError):
        token_bits([None] * 64)


def test_splice_replaces_only_owned_rows():
    gp, lp1, lp2 = "iron man and spider man jog", "iron man", "jog"
    spans = bind(gp, lp1, lp2, "")
    assert spans == [(1, 2), (6, 1), None]
    g_emb = fake_encode(fake_tokenize(gp)[0], seed=0)
    l1 = fake_encode(fake_tokenize(lp1)[0], seed=1)
    l2 = fake_encode(fake_tokenize(lp2)[0], seed=2)
    out = splice(g_emb, [l1, l2, None], spans)
    assert out.shape == g_emb.shape
    assert torch.equal(out[0, 1:3], l1[0, 1:3])
    assert torch.equal(out[0, 6], l2[0, 1])
    keep = torch.ones(MAX_TOKENS, dtype=torch.bool)
    keep[[1, 2, 6]] = False
    assert torch.equal(out[0, keep], g_emb[0, keep])
    assert not torch.equal(out, g_emb)
    assert torch.equal(g_emb, fake_encode(fake_tokenize(gp)[0], seed=0))  # input untouched


def test_splice_rejects_bad_shapes():
    g = torch.zeros(1, MAX_TOKENS, 4)
    with pytest.raises(ValueError):
        splice(g, [torch.zeros(1, MAX_TOKENS, 5)], [(1, 1)])
    with pytest.raises(ValueError):
        splice(g, [torch.zeros(1, MAX_TOKENS, 4)], [(76, 2)])


def test_unmatched_prompt_names_it_and_shows_global():
    with pytest.raises(PromptBindingError) as e:
        bind("iron man and spider man", "iron man", "batman")
    assert e.value.kind == "not_found" and e.value.index == 1
    assert "'batman'" in str(e.value) and "'iron man and spider man'" in str(e.value)


@pytest.mark.parametrize("rule", ["next_free", "first"])
def test_overlapping_claims_error(rule):
    with pytest.raises(PromptBindingError) as e:
        bind("iron man and spider man", "iron man", "man and", rule=rule)
    assert e.value.kind == "overlap" and e.value.index == 1 and e.value.other == 0
    with pytest.raises(PromptBindingError):
        bind("a red car", "red car", "red car", rule=rule)  # same phrase twice claims the same tokens


def test_too_long_global_and_local():
    long_prompt = " ".join(f"w{i}" for i in range(80))
    with pytest.raises(PromptBindingError) as e:
        bind(long_prompt, "w1")
    assert e.value.kind == "too_long" and e.value.index is None and "82 tokens" in str(e.value)
    ok = " ".join(f"w{i}" for i in range(75))          # 75 words + BOS + EOS = 77 fits
    assert bind(ok, "w74") == [(75, 1)]
    with pytest.raises(PromptBindingError) as e:
        bind(ok, " ".join(f"w{i}" for i in range(76)))
    assert e.value.kind == "too_long" and e.value.index == 0 and "78 tokens" in str(e.value)


@pytest.mark.parametrize("prompt", ["(iron man:1.2)", "(iron) man", "iron man)"])
def test_weight_syntax_rejected(prompt):
    assert has_weight_syntax(prompt)
    with pytest.raises(PromptBindingError) as e:
        bind("iron man runs", prompt)
    assert e.value.kind == "weights" and "(word:1.2)" in str(e.value)


def test_escaped_parentheses_are_not_weights():
    assert not has_weight_syntax(r"iron man \(armour\)")
    assert not has_weight_syntax("iron man")


@pytest.mark.parametrize("rule", ["next_free", "first"])
def test_repeated_prompt_warns_and_uses_first(caplog, rule):
    notes = []
    with caplog.at_level(logging.WARNING):
        spans = bind("a man walks past a man", "man", rule=rule, notes=notes)
    assert spans == [(2, 1)]
    assert any("occurs 2 times" in r.getMessage() for r in caplog.records)
    assert len(notes) == 1 and "occurs 2 times" in notes[0] and "'man#2'" in notes[0]


# "iron man and gray man are jogging": BOS, iron 1, man 2, and 3, gray 4, man 5, are 6, jogging 7
JOG = "iron man and gray man are jogging"


@pytest.mark.parametrize("order", [("iron man", "man"), ("man", "iron man")])
def test_next_free_binds_man_beside_iron_man_in_either_order(order):
    notes = []
    spans = dict(zip(order, bind(JOG, *order, notes=notes)))
    assert spans == {"iron man": (1, 2), "man": (5, 1)}
    assert len(notes) == 1 and "'man'" in notes[0] and "occurrence 2 of 2 (tokens 5-5)" in notes[0]
    assert "'man#2'" in notes[0]


@pytest.mark.parametrize("order", [("gray man", "man"), ("man", "gray man")])
def test_next_free_gray_man_and_man(order):
    spans = dict(zip(order, bind(JOG, *order)))
    assert spans == {"gray man": (4, 2), "man": (2, 1)}  # man's first occurrence is free: it keeps it


def test_first_rule_is_the_official_overlap_error():
    with pytest.raises(PromptBindingError) as e:
        bind(JOG, "iron man", "man", rule="first")
    assert e.value.kind == "overlap" and e.value.index == 1 and e.value.other == 0
    assert "same words" in str(e.value) and "no other occurrence" not in str(e.value)
    assert bind(JOG, "iron man", "man#2", rule="first") == [(1, 2), (5, 1)]  # explicit occurrences still work
    with pytest.raises(ValueError, match="unknown binding rule"):
        bind(JOG, "man", rule="last")


def test_explicit_occurrence():
    notes = []
    assert bind(JOG, "man#2", notes=notes) == [(5, 1)]
    assert "as its '#2' asks" in notes[0]
    assert bind(JOG, "man#1") == [(2, 1)]
    assert bind(JOG, "man#2", "iron man") == [(5, 1), (1, 2)]
    with pytest.raises(PromptBindingError) as e:  # explicit, and claimed: no fallback to another occurrence
        bind(JOG, "iron man", "man#1")
    assert e.value.kind == "overlap" and e.value.index == 1


def test_words_that_occur_three_times_take_the_one_left_free():
    gp = "man in red and man in blue and man in green"  # "man" at tokens 1, 5, 9
    for order in [("man in red", "man in blue", "man"), ("man", "man in red", "man in blue"),
                  ("man in blue", "man", "man in red")]:
        spans = dict(zip(order, bind(gp, *order)))
        assert spans == {"man in red": (1, 3), "man in blue": (5, 3), "man": (9, 1)}, order
    assert bind(gp, "man", "man", "man") == [(1, 1), (5, 1), (9, 1)]  # identical prompts share out the occurrences
    assert bind(gp, "man#3", "man in red") == [(9, 1), (1, 3)]
    with pytest.raises(PromptBindingError) as e:  # four claims on three occurrences
        bind(gp, "man", "man", "man", "man")
    assert e.value.kind == "overlap" and "no other occurrence of it is free" in str(e.value)


def test_many_unplaceable_prompts_fail_fast():
    # 12 identical prompts on 11 occurrences: the search is bounded and ends in the overlap error
    gp = " ".join(["dog"] * 11)
    with pytest.raises(PromptBindingError) as e:
        bind(gp, *["dog"] * 12)
    assert e.value.kind == "overlap" and e.value.index == 11 and "placements were tried" in str(e.value)


def test_split_occurrence_syntax():
    assert split_occurrence("man#2") == ("man", 2)
    assert split_occurrence("gray man#12") == ("gray man", 12)
    assert split_occurrence("man") == ("man", None)
    assert split_occurrence("colour #ff0000") == ("colour #ff0000", None)  # '#' after a space is text
    assert split_occurrence("C#") == ("C#", None)                          # a bare trailing '#' too
    assert occurrences([0, 7, 7, 7, 9], [7, 7]) == [1, 2]                  # overlapping occurrences count


@pytest.mark.parametrize("prompt,words", [("man#0", "'#0'"), ("man#-1", "'#-1'"), ("man#x", "'#x'"),
                                          ("man#²", "'#²'")])
def test_bad_occurrence_suffix(prompt, words):
    with pytest.raises(PromptBindingError) as e:
        split_occurrence(prompt)
    assert e.value.kind == "occurrence" and words in str(e.value) and "'man#2'" in str(e.value)
    with pytest.raises(PromptBindingError) as e:
        bind(JOG, "iron man", prompt)
    assert e.value.kind == "occurrence" and e.value.index == 1


def test_occurrence_past_the_last_one():
    with pytest.raises(PromptBindingError) as e:
        bind(JOG, "man#5")
    assert e.value.kind == "occurrence" and e.value.index == 0
    assert "occurrence 5" in str(e.value) and "2 times" in str(e.value)
    with pytest.raises(PromptBindingError, match="1 time$"):
        bind(JOG, "iron man#2")


def test_empty_prompt_owns_nothing_and_never_errors():
    assert bind("anything at all", "", "   ") == [None, None]
    assert torch.equal(token_bits([None, None]), torch.zeros(MAX_TOKENS, dtype=torch.long))


def test_pack_bits_sets_one_bit_per_member_region():
    members = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert pack_bits(members).tolist() == [1, 0, 3, 2]
    assert pack_bits(torch.zeros(0, 4, dtype=torch.bool)).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        pack_bits(torch.zeros(64, 2, dtype=torch.bool))
