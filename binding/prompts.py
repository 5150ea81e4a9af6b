"""Region-prompt binding (docs/design.md §4): find each local prompt inside the global prompt and splice.

Works on plain token sequences and embedding tensors, never on a tokenizer: the node layer turns
ComfyUI's tokenizer output into sequences of hashable token keys (ints for vocabulary tokens) and
says which keys are special (BOS, EOS, padding), then calls `bind_prompts` and `splice`.

Binding rules (docs/design.md §4 and quirk 11): the local prompt's word tokens must appear verbatim and
contiguously in the global prompt; the first occurrence is used (repeats are logged); a local
prompt with no words (`""`) owns no token; two local prompts may not claim the same token; prompts
longer than one 77-token window are refused instead of being truncated (quirk 15).
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


def count_occurrences(global_ids: Sequence[Hashable], words: Sequence[Hashable]) -> int:
    """How many (possibly overlapping) times the word sequence `words` occurs in `global_ids`."""
    seq, n = list(global_ids), len(words)
    if n == 0:
        return 0
    return sum(1 for s in range(len(seq) - n + 1) if seq[s:s + n] == list(words))


def bind_prompts(global_prompt: str, global_ids: Sequence[Hashable], local_prompts: Sequence[str],
                 local_ids: Sequence[Sequence[Hashable]], specials: Collection[Hashable] = (SD_BOS, SD_EOS),
                 global_tokens: int | None = None, local_tokens: Sequence[int] | None = None) -> list[Span | None]:
    """Find every local prompt's span in the global prompt, enforcing the binding rules.

    `global_ids`/`local_ids` are the first 77-token rows; `global_tokens`/`local_tokens` are each
    prompt's full token count with BOS and EOS (defaults: word count + 2), used to refuse prompts
    that did not fit one window. Returns one `(start, n)` or None (empty prompt) per local prompt.
    Raises `PromptBindingError`; warns (logging) when a local prompt occurs more than once.
    """
    if len(local_prompts) != len(local_ids):
        raise ValueError(f"{len(local_prompts)} local prompts but {len(local_ids)} token rows")
    n_global = global_tokens if global_tokens is not None else len(word_tokens(global_ids, specials)) + 2
    if n_global > MAX_TOKENS:
        raise PromptBindingError(
            "too_long", None, f"the global prompt has {n_global} tokens (BOS and EOS included); the limit is "
            f"{MAX_TOKENS}, so {n_global - MAX_TOKENS} would be cut off")
    spans: list[Span | None] = []
    for k, (prompt, ids) in enumerate(zip(local_prompts, local_ids)):
        if has_weight_syntax(prompt):
            raise PromptBindingError(
                "weights", k, f"local prompt {prompt!r} uses weight syntax such as '(word:1.2)'; local "
                "prompts are matched token by token against the global prompt and cannot carry weights")
        n_local = local_tokens[k] if local_tokens is not None else len(word_tokens(ids, specials)) + 2
        if n_local > MAX_TOKENS:
            raise PromptBindingError(
                "too_long", k, f"local prompt {prompt!r} has {n_local} tokens (BOS and EOS included); "
                f"the limit is {MAX_TOKENS}")
        words = word_tokens(ids, specials)
        if not words:
            spans.append(None)  # "" keeps its region separated but owns no text token (docs/design.md §2)
            continue
        span = find_span(global_ids, ids, specials)
        if span is None:
            raise PromptBindingError(
                "not_found", k, f"local prompt {prompt!r} does not occur in the global prompt "
                f"{global_prompt!r} (it must appear word for word, as the same tokens)")
        repeats = count_occurrences(global_ids, words)
        if repeats > 1:
            _log.warning("VideoGrain: local prompt %r occurs %d times in the global prompt %r; the first "
                         "occurrence (tokens %d-%d) is bound to its region", prompt, repeats, global_prompt,
                         span[0], span[0] + span[1] - 1)
        spans.append(span)
    _check_overlaps(local_prompts, spans)
    return spans


def _check_overlaps(prompts: Sequence[str], spans: Sequence[Span | None]) -> None:
    owner: dict[int, int] = {}
    for k, span in enumerate(spans):
        if span is None:
            continue
        for j in range(span[0], span[0] + span[1]):
            if j in owner:
                i = owner[j]
                raise PromptBindingError(
                    "overlap", k, f"local prompts {prompts[i]!r} (number {i + 1}) and {prompts[k]!r} (number {k + 1}) claim the same "
                    f"words of the global prompt (token {j}); each token can belong to one region only", other=i)
            owner[j] = k


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
