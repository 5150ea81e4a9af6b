"""Region-prompt binding (docs/design.md §4): find each local prompt inside the global prompt and splice.

Works on plain token sequences and embedding tensors, never on a tokenizer: the node layer turns
ComfyUI's tokenizer output into sequences of hashable token keys (ints for vocabulary tokens) and
says which keys are special (BOS, EOS, padding), then calls `bind_prompts` and `splice`.

Binding rules (docs/design.md §4 and quirk 11): the local prompt's word tokens must appear verbatim and
contiguously in the global prompt; a local prompt with no words (`""`) owns no token; two local
prompts may not claim the same token; prompts longer than one 77-token window are refused instead of
being truncated (quirk 15). Which occurrence a repeated phrase binds to: `"man#2"` picks the second;
otherwise the rule `next_free` (default) takes the earliest occurrence that leaves every other local
prompt free words, `first` (official) the first occurrence (`bind_prompts` states both exactly).
Occurrences other than a single first one are logged.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Collection, Hashable, Sequence

import torch

from .bits import MAX_TOKENS, Span

SD_BOS, SD_EOS = 49406, 49407  # SD1.5 CLIP start/end ids; end also pads

_log = logging.getLogger(__name__)

# ComfyUI parses any unescaped parenthesis as emphasis: "(word)" is ×1.1, "(word:1.2)" is 1.2.
_WEIGHT_SYNTAX = re.compile(r"(?<!\\)[()]")
# "man#2": a "#" right after the last word, then at least one non-space character up to the end.
_OCCURRENCE = re.compile(r"^(?P<text>.*\S)#(?P<n>[^\s#]+)$", re.S)

RULES = ("next_free", "first")  # binding rules; "first" is the official one (docs/design.md §4, quirk 11)
DEFAULT_RULE = "next_free"
_SEARCH_LIMIT = 100_000  # candidate placements tried before giving up (only pathological prompts get near)


class PromptBindingError(ValueError):
    """A local or global prompt that cannot be bound.

    `kind` is one of "not_found", "overlap", "too_long", "weights"; `index` is the local prompt's
    position (0-based) or None for the global prompt; `other` is the second prompt of an overlap.
    """

    def __init__(self, kind: str, index: int | None, message: str, other: int | None = None):
        self.kind, self.index, self.other = kind, index, other
        super().__init__(message)


def has_weight_syntax(prompt: str) -> bool:
    """True when `prompt` holds an unescaped "(" or ")", which ComfyUI reads as a prompt weight."""
    return _WEIGHT_SYNTAX.search(prompt) is not None


def word_tokens(ids: Sequence[Hashable], specials: Collection[Hashable] = (SD_BOS, SD_EOS)) -> list[Hashable]:
    """The word tokens of a tokenised prompt: `ids` without BOS, EOS and padding."""
    return [t for t in ids if t not in specials]


def find_span(global_ids: Sequence[Hashable], local_ids: Sequence[Hashable],
              specials: Collection[Hashable] = (SD_BOS, SD_EOS)) -> Span | None:
    """First `(start, n)` where the local prompt's word ids occur in `global_ids`, else None.

    `local_ids` may be a full padded row: BOS/EOS/padding (`specials`) are dropped first. A local
    prompt without words (`""`) returns None; callers tell it apart from "not found" with
    `word_tokens`. Positions index `global_ids` as given (0 is BOS for a full row).
    """
    words = word_tokens(local_ids, specials)
    n = len(words)
    if n == 0:
        return None
    seq = list(global_ids)
    for start in range(len(seq) - n + 1):
        if seq[start:start + n] == words:
            return start, n
    return None


def split_occurrence(prompt: str) -> tuple[str, int | None]:
    """`(text, occurrence)` of a local prompt: "man#2" → ("man", 2); without a suffix, (prompt, None).

    The suffix is a "#" attached to the prompt's last word followed by anything up to the end
    without spaces; it must be a whole number ≥ 1. A "#" after a space ("colour #ff0000") or at the
    very end ("C#") is ordinary text. Raises `PromptBindingError` ("occurrence") for a bad number.
    """
    match = _OCCURRENCE.match(prompt.strip())
    if match is None:
        return prompt, None
    text, suffix = match.group("text"), match.group("n")
    if not re.fullmatch(r"[0-9]+", suffix) or int(suffix) < 1:
        raise PromptBindingError(
            "occurrence", None, f"local prompt {prompt!r} ends in '#{suffix}'; the occurrence suffix must be a whole "
            f"number from 1 (e.g. {text + '#2'!r} for the second occurrence of {text!r})")
    return text, int(suffix)


def occurrences(global_ids: Sequence[Hashable], words: Sequence[Hashable]) -> list[int]:
    """Start positions of every (possibly overlapping) occurrence of `words` in `global_ids`."""
    seq, words, n = list(global_ids), list(words), len(words)
    if n == 0:
        return []
    return [s for s in range(len(seq) - n + 1) if seq[s:s + n] == words]


def count_occurrences(global_ids: Sequence[Hashable], words: Sequence[Hashable]) -> int:
    """How many (possibly overlapping) times the word sequence `words` occurs in `global_ids`."""
    return len(occurrences(global_ids, words))


def bind_prompts(global_prompt: str, global_ids: Sequence[Hashable], local_prompts: Sequence[str],
                 local_ids: Sequence[Sequence[Hashable]], specials: Collection[Hashable] = (SD_BOS, SD_EOS),
                 global_tokens: int | None = None, local_tokens: Sequence[int] | None = None,
                 rule: str = DEFAULT_RULE, notes: list[str] | None = None) -> list[Span | None]:
    """Find every local prompt's span in the global prompt, enforcing the binding rules.

    `local_prompts` are the prompts as typed (an occurrence suffix "man#2" included, see
    `split_occurrence`); `local_ids` are the token rows of their text *without* the suffix.
    `global_ids`/`local_ids` are the first 77-token rows; `global_tokens`/`local_tokens` are each
    prompt's full token count with BOS and EOS (defaults: word count + 2), used to refuse prompts
    that did not fit one window. Returns one `(start, n)` or None (empty prompt) per local prompt.

    Occurrences are numbered 1, 2, … by start token. A prompt with "#N" takes its N-th occurrence
    under either rule. The others:
    - `rule="first"` (official, docs/design.md §4): the first occurrence; two prompts claiming one token is
      an error;
    - `rule="next_free"` (default): the assignment, over the prompts in region order, that takes
      for each prompt the earliest occurrence that still lets every prompt get an occurrence
      overlapping no other prompt's (lexicographically least in region order). So "Iron Man" and
      "man" in "Iron Man and gray man" bind to tokens 1-2 and 5 in either region order. When no
      such assignment exists it is the same overlap error as `first`.
    Notes (a prompt bound past its first occurrence, a prompt that occurs several times) are logged
    as warnings and appended to `notes` when given. Raises `PromptBindingError`.
    """
    if rule not in RULES:
        raise ValueError(f"unknown binding rule {rule!r}; expected one of {RULES}")
    if len(local_prompts) != len(local_ids):
        raise ValueError(f"{len(local_prompts)} local prompts but {len(local_ids)} token rows")
    n_global = global_tokens if global_tokens is not None else len(word_tokens(global_ids, specials)) + 2
    if n_global > MAX_TOKENS:
        raise PromptBindingError(
            "too_long", None, f"the global prompt has {n_global} tokens (BOS and EOS included); the limit is "
            f"{MAX_TOKENS}, so {n_global - MAX_TOKENS} would be cut off")
    # Per prompt: None (no words) or (word count, candidate starts in order of preference, all starts).
    wanted: list[tuple[int, list[int], list[int]] | None] = []
    for k, (prompt, ids) in enumerate(zip(local_prompts, local_ids)):
        if has_weight_syntax(prompt):
            raise PromptBindingError(
                "weights", k, f"local prompt {prompt!r} uses weight syntax such as '(word:1.2)'; local "
                "prompts are matched token by token against the global prompt and cannot carry weights")
        try:
            text, occurrence = split_occurrence(prompt)
        except PromptBindingError as e:
            raise PromptBindingError("occurrence", k, str(e)) from None
        n_local = local_tokens[k] if local_tokens is not None else len(word_tokens(ids, specials)) + 2
        if n_local > MAX_TOKENS:
            raise PromptBindingError(
                "too_long", k, f"local prompt {prompt!r} has {n_local} tokens (BOS and EOS included); "
                f"the limit is {MAX_TOKENS}")
        words = word_tokens(ids, specials)
        if not words:
            wanted.append(None)  # "" keeps its region separated but owns no text token (docs/design.md §2)
            continue
        starts = occurrences(global_ids, words)
        if not starts:
            raise PromptBindingError(
                "not_found", k, f"local prompt {text!r} does not occur in the global prompt "
                f"{global_prompt!r} (it must appear word for word, as the same tokens)")
        if occurrence is not None:
            if occurrence > len(starts):
                raise PromptBindingError(
                    "occurrence", k, f"local prompt {prompt!r} asks for occurrence {occurrence} of {text!r}, but "
                    f"the global prompt {global_prompt!r} holds it {len(starts)} time"
                    f"{'s' if len(starts) > 1 else ''}")
            candidates = [starts[occurrence - 1]]
        else:
            candidates = starts if rule == "next_free" else starts[:1]
        wanted.append((len(words), candidates, starts))
    spans = _assign(local_prompts, wanted)
    for k, (prompt, want, span) in enumerate(zip(local_prompts, wanted, spans)):
        if want is not None:
            _note(notes, k, prompt, span, want[2], global_prompt)
    return spans


def _assign(prompts: Sequence[str], wanted: Sequence[tuple[int, list[int], list[int]] | None]) -> list[Span | None]:
    """The lexicographically least overlap-free choice of one candidate per prompt (region order),
    by depth-first search; raises the overlap error of the greedy choice when there is none."""
    order = [k for k, w in enumerate(wanted) if w is not None]
    chosen: dict[int, int] = {}
    taken: set[int] = set()
    budget = [_SEARCH_LIMIT]

    def place(i: int) -> bool:
        if i == len(order):
            return True
        k = order[i]
        n, candidates, _ = wanted[k]
        for start in candidates:
            span = range(start, start + n)
            if not taken.isdisjoint(span):
                continue
            budget[0] -= 1
            if budget[0] < 0:
                return False
            taken.update(span)
            chosen[k] = start
            if place(i + 1):
                return True
            taken.difference_update(span)
        return False

    if place(0):
        return [None if w is None else (chosen[k], w[0]) for k, w in enumerate(wanted)]
    # None found. The first descent of the search is the greedy choice (each prompt its first free
    # candidate), so that clashes: name its first clash.
    searched = "" if budget[0] >= 0 else (f"; {_SEARCH_LIMIT} placements were tried without finding free words for "
                                          "every prompt, pick occurrences with '#N'")
    owner: dict[int, int] = {}
    for k in order:
        n, candidates, _ = wanted[k]
        start = next((s for s in candidates if all(j not in owner for j in range(s, s + n))), candidates[0])
        clash = next((j for j in range(start, start + n) if j in owner), None)
        if clash is not None:
            i = owner[clash]
            again = " (and no other occurrence of it is free)" if len(candidates) > 1 else ""
            raise PromptBindingError(
                "overlap", k, f"local prompts {prompts[i]!r} (number {i + 1}) and {prompts[k]!r} (number {k + 1}) "
                f"claim the same words of the global prompt (token {clash}){again}; each token can belong to one "
                f"region only{searched}", other=i)
        owner.update((j, k) for j in range(start, start + n))
    raise AssertionError("unreachable: the greedy choice is the search's first descent")


def _note(notes: list[str] | None, k: int, prompt: str, span: Span, starts: list[int], global_prompt: str) -> None:
    """Log (and collect) which occurrence a repeated or displaced local prompt was bound to."""
    if len(starts) < 2:
        return
    text, explicit = split_occurrence(prompt)
    number = starts.index(span[0]) + 1
    where = f"occurrence {number} of {len(starts)} (tokens {span[0]}-{span[0] + span[1] - 1})"
    if explicit is not None:
        message = f"local prompt {prompt!r} (region {k + 1}) is bound to {where}, as its '#{explicit}' asks"
    elif number == 1:
        message = (f"local prompt {prompt!r} (region {k + 1}) occurs {len(starts)} times in the global prompt "
                   f"{global_prompt!r}; the first occurrence (tokens {span[0]}-{span[0] + span[1] - 1}) is bound to "
                   f"its region; write {text + '#2'!r} (or #3, …) to bind another one")
    else:
        message = (f"local prompt {prompt!r} (region {k + 1}) is bound to {where} because the earlier ones are "
                   f"claimed by other local prompts; write {text + f'#{number}'!r} to make that explicit")
    _log.warning("VideoGrain: %s", message)
    if notes is not None:
        notes.append(message)


def splice(global_emb: torch.Tensor, local_embs: Sequence[torch.Tensor | None],
           spans: Sequence[Span | None]) -> torch.Tensor:
    """Copy of `global_emb` [1, 77, C] with rows start…start+n−1 replaced by rows 1…n of each local.

    Row 0 of a local embedding is its BOS; its words follow from row 1 (docs/design.md §4 step 2).
    """
    if global_emb.ndim != 3 or global_emb.shape[0] != 1:
        raise ValueError(f"global embedding must be [1, T, C], got {list(global_emb.shape)}")
    if len(local_embs) != len(spans):
        raise ValueError(f"{len(local_embs)} local embeddings but {len(spans)} spans")
    out = global_emb.clone()
    for k, (emb, span) in enumerate(zip(local_embs, spans)):
        if span is None:
            continue
        start, n = span
        if emb is None or emb.ndim != 3 or emb.shape[0] != 1 or emb.shape[2] != global_emb.shape[2]:
            raise ValueError(f"local embedding {k} must be [1, T, {global_emb.shape[2]}], got "
                             f"{None if emb is None else list(emb.shape)}")
        if start < 1 or start + n > global_emb.shape[1] or 1 + n > emb.shape[1]:
            raise ValueError(f"span {span} of local prompt {k} does not fit the embeddings")
        out[:, start:start + n] = emb[:, 1:1 + n].to(out.dtype)
    return out
