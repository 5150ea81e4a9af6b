"""Random-weight CLIP checkpoints for the CLIP metric tests, small on disk (test-only, fixed seed).

- `vision_state_dict()`: a CLIP ViT-L/14 vision tower with projection in Hugging Face key names, the
  smallest layout core's CLIPVisionLoader accepts (comfy/clip_vision.py picks clip_vision_config_vitl.json
  from `vision_model.encoder.layers.22.*` and a 257-token position table): 24 layers of width 1024,
  224×224 input, 768-d image embeddings.
- `text_state_dict()`: a CLIP-L text encoder (12 layers, width 768) WITH `text_projection.weight`, as core's
  CLIPLoader (type stable_diffusion) reads it; its projected text embedding is 768-d like the images'.

Every weight matrix is a strided window onto one shared random fp16 buffer (rows are shifted windows,
offsets differ per tensor), so `torch.save` writes the buffer once: each file is a few MB instead of
~600 MB / 250 MB, while the network still has distinct, generic weights everywhere. Core loads the
.pt with torch.load (views are restored) and copies the values into its own parameters.
"""
from __future__ import annotations

from pathlib import Path

import torch

SEED = 2026
BUFFER = 1 << 20  # fp16 values in the shared buffer (2 MiB)


class _Weights:
    def __init__(self, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.buffer = (torch.randn(BUFFER, generator=g) * 0.02).half()
        self.ones = torch.ones(1, dtype=torch.float16)
        self.zeros = torch.zeros(1, dtype=torch.float16)
        self.count = 0

    def matrix(self, *shape: int) -> torch.Tensor:
        """A [shape] view whose leading-dim rows are shifted windows of the buffer (distinct per tensor)."""
        self.count += 1
        inner = 1
        for s in shape[1:]:
            inner *= s
        step = 7 + (self.count % 13)  # rows overlap but differ; odd-ish steps avoid repeats between tensors
        offset = (self.count * 7919) % (BUFFER // 4)
        assert offset + step * (shape[0] - 1) + inner <= BUFFER, shape
        strides, acc = [], 1
        for s in reversed(shape[1:]):
            strides.insert(0, acc)
            acc *= s
        return self.buffer.as_strided(shape, (step, *strides), offset)

    def ln(self, sd: dict, prefix: str, width: int) -> None:
        sd[prefix + ".weight"] = self.ones.expand(width)
        sd[prefix + ".bias"] = self.zeros.expand(width)

    def linear(self, sd: dict, prefix: str, out: int, inp: int, bias: bool = True) -> None:
        sd[prefix + ".weight"] = self.matrix(out, inp)
        if bias:
            sd[prefix + ".bias"] = self.zeros.expand(out)


def _layers(w: _Weights, sd: dict, prefix: str, count: int, width: int, hidden: int) -> None:
    for i in range(count):
        p = f"{prefix}.encoder.layers.{i}"
        w.ln(sd, p + ".layer_norm1", width)
        w.ln(sd, p + ".layer_norm2", width)
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.linear(sd, f"{p}.self_attn.{name}", width, width)
        w.linear(sd, p + ".mlp.fc1", hidden, width)
        w.linear(sd, p + ".mlp.fc2", width, hidden)


def vision_state_dict(seed: int = SEED) -> dict[str, torch.Tensor]:
    """CLIP ViT-L/14 (224) vision tower + visual_projection, HF names, random."""
    w, sd, width = _Weights(seed), {}, 1024
    sd["vision_model.embeddings.class_embedding"] = w.matrix(width)
    sd["vision_model.embeddings.patch_embedding.weight"] = w.matrix(width, 3, 14, 14)
    sd["vision_model.embeddings.position_embedding.weight"] = w.matrix(257, width)
    w.ln(sd, "vision_model.pre_layrnorm", width)
    _layers(w, sd, "vision_model", 24, width, 4096)
    w.ln(sd, "vision_model.post_layernorm", width)
    w.linear(sd, "visual_projection", 768, width, bias=False)
    return sd


def text_state_dict(seed: int = SEED + 1) -> dict[str, torch.Tensor]:
    """CLIP-L text encoder + text_projection, HF names, random (token rows distinct)."""
    w, sd, width = _Weights(seed), {}, 768
    sd["text_model.embeddings.token_embedding.weight"] = w.matrix(49408, width)
    sd["text_model.embeddings.position_embedding.weight"] = w.matrix(77, width)
    _layers(w, sd, "text_model", 12, width, 3072)
    w.ln(sd, "text_model.final_layer_norm", width)
    w.linear(sd, "text_projection", width, width, bias=False)
    return sd


def write(sd: dict[str, torch.Tensor], path: Path) -> Path:
    """Save with torch.save (shared storage written once); returns path."""
    torch.save(sd, str(path))
    return path
