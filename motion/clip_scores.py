"""CLIP-T and CLIP-F, the paper's two CLIP metrics of Table 1, on embeddings (docs/design.md §12.1).

Pure functions on embedding tensors; encoding the frames and the prompt is the caller's job (the node
layer uses the CLIP_VISION and CLIP models loaded in ComfyUI). Both take embeddings in CLIP's joint
image-text space (the projected embeddings) and use cosine similarity, so their norms do not matter:
- CLIP-T: mean over frames t of cos(image_t, text), the edit prompt's text embedding;
- CLIP-F: mean over consecutive pairs of cos(image_t, image_t+1).

Scale. Both are reported ×100 (`scale=100`), as the paper's Table 1 prints them (VideoGrain CLIP-F 98.63,
CLIP-T 36.56; Q-edit = CLIP-T / Warp-Err works out with CLIP-T in these units). The paper does not say
which CLIP model or preprocessing it used, so values from another CLIP are comparable between edits
measured with the same model, not with the table. Cosines are computed in float64.

This module lives in motion/ next to warp_error.py, the third Table 1 metric; it does not import ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SCALE = 100.0


class ClipScoreError(ValueError):
    """Embeddings that cannot give a CLIP score (wrong shape, too few frames, zero or non-finite vectors)."""


@dataclass(frozen=True)
class ClipScore:
    """Clip value (mean of per_frame) and the per-frame (CLIP-T) or per-pair (CLIP-F) values, both × scale."""

    value: float
    per_frame: list[float]
    scale: float


def _embeddings(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ClipScoreError(f"{name} must be [count, dim] embeddings, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ClipScoreError(f"{name} holds non-finite values (NaN or inf)")
    norms = x.norm(dim=1)
    if (norms == 0).any():
        raise ClipScoreError(f"{name} holds an all-zero embedding (row {int((norms == 0).nonzero()[0])}): "
                             "its cosine is undefined")
    return x / norms[:, None]


def _unit_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of rows already of unit length, clamped against rounding to [-1, 1]."""
    return (a * b).sum(dim=1).clamp(-1.0, 1.0)


def cosine(a, b) -> torch.Tensor:
    """Row-wise cosine similarity of [N, D] and [N, D] (or [1, D], broadcast), float64 [N]."""
    a, b = _embeddings(a, "a"), _embeddings(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ClipScoreError(f"embedding sizes differ: {a.shape[1]} and {b.shape[1]}")
    return _unit_cosine(a, b)


def clip_text_score(image_embeds, text_embed, scale: float = SCALE) -> ClipScore:
    """CLIP-T: mean over frames of cos(image_embeds[t], text_embed) × scale.

    image_embeds: [F, D] projected image embeddings (F >= 1); text_embed: [D] or [1, D] projected text embedding.
    """
    images = _embeddings(image_embeds, "image embeddings")
    text = _embeddings(text_embed, "text embedding")
    if text.shape[0] != 1:
        raise ClipScoreError(f"one text embedding expected, got {text.shape[0]}")
    if images.shape[1] != text.shape[1]:
        raise ClipScoreError(f"the image embeddings have {images.shape[1]} dimensions but the text embedding "
                             f"{text.shape[1]}: they come from different CLIP models")
    values = (_unit_cosine(images, text) * scale).tolist()
    return ClipScore(float(sum(values) / len(values)), values, scale)


def clip_frame_score(image_embeds, scale: float = SCALE) -> ClipScore:
    """CLIP-F: mean over t of cos(image_embeds[t], image_embeds[t+1]) × scale; needs F >= 2 frames."""
    images = _embeddings(image_embeds, "image embeddings")
    if images.shape[0] < 2:
        raise ClipScoreError(f"CLIP-F compares consecutive frames and needs at least 2, got {images.shape[0]}")
    values = (_unit_cosine(images[:-1], images[1:]) * scale).tolist()
    return ClipScore(float(sum(values) / len(values)), values, scale)
