"""Per-call ST-Layout Attn logic behind the UNet's attention replacements (spec §5–§8).

ComfyUI calls a replacement as `fn(q, k, v, extra_options)` with projected q, k, v of shape
`[B, N, heads·dim]`, where B = (number of CFG chunks) × F frames. This module splits the batch by
`cond_or_uncond` (never by position), runs full space-time self-attention over all F frames of a
branch, and, inside the modulation window, reshapes the scores with the region layout by calling
the math in `reference.py` / `fast.py`. Nothing here imports ComfyUI.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..sampling.schedule import sigma_to_timestep, step_index, time_factor
from .fast import modulated_attention
from .reference import modulated_probs
from .spacetime import spacetime_attention

COND, UNCOND = 0, 1  # ComfyUI's cond_or_uncond codes
BRANCHES = {"cond": (COND,), "uncond": (UNCOND,), "both": (COND, UNCOND)}
RECORDER_KEY = "videograin_recorder"  # transformer_options key of the sampler's AttentionRecorder
RECORD_EVERY = 5  # outside the modulation window, cross-attention maps are recorded every 5th step


class AttentionPatchError(RuntimeError):
    """The UNet called the patch with a batch that cannot be a whole clip per CFG branch."""


@dataclass(frozen=True)
class STLayoutSettings:
    """The knobs of VideoGrainApplySTLayout; defaults reproduce the official code (spec §3, §8)."""

    cross_strength: float = 1.0
    self_strength: float = 0.3
    modulated_fraction: float = 0.3
    cross_branch: str = "cond"
    self_branch: str = "uncond"

    def window_steps(self, steps: int) -> int:
        """Number of leading steps that are modulated: 15 of 50 at the default 0.3 (quirk 4)."""
        return int(math.floor(self.modulated_fraction * steps + 0.5))


def _branches(extra_options: dict, batch: int) -> tuple[list[int], int]:
    """CFG codes of the batch chunks and the frame count of each chunk."""
    codes = list(extra_options.get("cond_or_uncond") or [COND])
    if batch % len(codes):
        raise AttentionPatchError(
            f"VideoGrain attention: batch {batch} does not split into {len(codes)} CFG chunks of whole clips")
    return codes, batch // len(codes)


def _spatial_size(extra_options: dict, tokens: int) -> tuple[int, int]:
    """(h, w) of this layer's token grid, from the activations ComfyUI reports."""
    shape = extra_options.get("activations_shape") or extra_options.get("original_shape")
    h, w = int(shape[-2]), int(shape[-1])
    if h * w != tokens:
        raise AttentionPatchError(f"VideoGrain attention: {tokens} tokens do not match activations {h}x{w}")
    return h, w


def _step(extra_options: dict) -> tuple[int, int, int] | None:
    """(step index, steps in the run, training timestep t) or None outside a sampling run."""
    sigmas, schedule = extra_options.get("sigmas"), extra_options.get("sample_sigmas")
    if sigmas is None or schedule is None:
        return None
    sigma = float(sigmas.reshape(-1)[0])
    return step_index(schedule, sigma), max(len(schedule) - 1, 1), sigma_to_timestep(sigma)


class SpaceTimeSelfAttention:
    """attn1 replacement without modulation: each CFG branch attends over all of its frames."""

    def __deepcopy__(self, memo):  # ComfyUI deep-copies model_options; the patch is immutable
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        codes, frames = _branches(extra_options, q.shape[0])
        chunks, tokens, width = len(codes), q.shape[1], q.shape[2]
        out = spacetime_attention(q.reshape(chunks, frames * tokens, width),
                                  k.reshape(chunks, frames * k.shape[1], width),
                                  v.reshape(chunks, frames * v.shape[1], width), heads)
        return out.reshape(q.shape[0], tokens, width)


class STLayoutAttention:
    """attn1 or attn2 replacement of one modulated block: space-time attention plus ST-Layout Attn.

    `kind` is "self" (attn1) or "cross" (attn2). `layout` is a `masks.layout.RegionLayout`.
    """

    def __init__(self, kind: str, layout, settings: STLayoutSettings):
        if kind not in ("self", "cross"):
            raise ValueError(f"kind must be 'self' or 'cross', got {kind!r}")
        self.kind, self.layout, self.settings = kind, layout, settings
        self.strength = settings.self_strength if kind == "self" else settings.cross_strength
        self.branches = BRANCHES[settings.self_branch if kind == "self" else settings.cross_branch]
        self._cache: dict = {}

    def __deepcopy__(self, memo):
        return self

    def _region_terms(self, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(query region bits, area term) for this layer size, cached per size and device."""
        key = (h, w, str(device))
        if key not in self._cache:
            area = self.layout.self_area(h, w) if self.kind == "self" else self.layout.cross_area(h, w)
            self._cache[key] = (self.layout.query_bits(h, w).to(device), area.to(device, torch.float32))
        return self._cache[key]

    def _key_bits(self, tokens: int, device) -> torch.Tensor:
        """Region bits of the text tokens, zero-padded when the context is longer than 77 tokens."""
        bits = self.layout.token_bits.to(device)
        if tokens > bits.numel():
            bits = torch.cat([bits, bits.new_zeros(tokens - bits.numel())])
        return bits[:tokens]

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        codes, frames = _branches(extra_options, q.shape[0])
        if frames != self.layout.frames:
            raise AttentionPatchError(
                f"VideoGrain ST-Layout: the UNet runs {frames} frames per CFG branch but the layout has "
                f"{self.layout.frames}; sample the latent the layout was built from")
        tokens, width = q.shape[1], q.shape[2]
        h, w = _spatial_size(extra_options, tokens)
        step = _step(extra_options)
        active = (step is not None and self.strength != 0.0
                  and step[0] < self.settings.window_steps(step[1]))
        recorder = extra_options.get(RECORDER_KEY)
        if recorder is not None:
            recorder.hit(self.kind, extra_options.get("block"))
            if self.kind != "cross":
                recorder = None  # only cross-attention maps are recorded

        outs = []
        for chunk, code in enumerate(codes):
            rows = slice(chunk * frames, (chunk + 1) * frames)
            qc, kc, vc = q[rows], k[rows], v[rows]
            modulate = active and code in self.branches
            # Recording needs the probabilities (materialised, [F·h·w, 77] per head): every modulated
            # step, and every RECORD_EVERY-th step outside the window for the "all steps" maps.
            record = (recorder is not None and code == COND and step is not None
                      and (step[0] < self.settings.window_steps(step[1]) or step[0] % RECORD_EVERY == 0))
            if self.kind == "self":
                qs = qc.reshape(1, frames * tokens, width)
                ks, vs = kc.reshape(1, -1, width), vc.reshape(1, -1, width)
                if modulate:
                    q_bits, area = self._region_terms(h, w, q.device)
                    weight = self.strength * time_factor(step[2]) * area
                    out = modulated_attention(qs, ks, vs, heads, q_bits, q_bits, weight)
                else:
                    out = spacetime_attention(qs, ks, vs, heads)
                outs.append(out.reshape(frames, tokens, width))
                continue
            # Cross-attention: every frame of a branch sees the same text, so the frames' queries
            # form one sequence against the 77 keys of the first frame.
            if not (modulate or record):
                outs.append(spacetime_attention(qc, kc, vc, heads))
                continue
            q_bits, area = self._region_terms(h, w, q.device)
            weight = (self.strength * time_factor(step[2]) * area) if modulate else torch.zeros_like(area)
            k_bits = self._key_bits(kc.shape[1], q.device)
            if record:
                probs = modulated_probs(qc.reshape(1, frames * tokens, width), kc[:1], heads, q_bits, k_bits, weight)
                recorder.add(probs, k_bits, frames, h, w, step[0], step[0] < self.settings.window_steps(step[1]))
                del probs
            if modulate:
                out = modulated_attention(qc.reshape(1, frames * tokens, width), kc[:1], vc[:1], heads,
                                          q_bits, k_bits, weight).reshape(frames, tokens, width)
            else:  # recording only: the output stays exactly what plain attention gives
                out = spacetime_attention(qc, kc, vc, heads)
            outs.append(out)
        return torch.cat(outs, dim=0)


class AttentionRecorder:
    """Accumulates each region's cross-attention mass per pixel on the conditional branch.

    Maps are kept at the layout's latent size, averaged over heads, layers and steps, separately
    for the modulation window and for all steps. Shared by identity across model-option copies.
    """

    def __init__(self, layout, expected_blocks=()):
        self.layout = layout
        # Which (kind, block) the patch must be called at; checked after the first step (spec §6 rec).
        self.expected = {(kind, tuple(block)) for block in expected_blocks for kind in ("self", "cross")}
        self.hits: set = set()
        k, f = layout.num_regions, layout.frames
        h, w = layout.latent_size
        self.sums = {"window": torch.zeros(k, f, h, w), "all": torch.zeros(k, f, h, w)}
        self.counts = {"window": 0, "all": 0}

    def __deepcopy__(self, memo):
        return self

    def hit(self, kind: str, block) -> None:
        """Note that the `kind` patch ran at `block` (ComfyUI's ("input", 4)-style tag)."""
        if block is not None:
            self.hits.add((kind, tuple(block)))

    def missing(self) -> list:
        """Expected (kind, block) pairs the patch was never called at."""
        return sorted(self.expected - self.hits)

    def add(self, probs: torch.Tensor, k_bits: torch.Tensor, frames: int, h: int, w: int,
            step: int, in_window: bool) -> None:
        """Add one layer call: `probs` [1, heads, F·h·w, keys] fp32."""
        mean = probs[0].mean(0)                                                # [F·h·w, keys]
        regions = torch.arange(self.layout.num_regions, device=k_bits.device)
        owned = ((k_bits[None, :] >> regions[:, None]) & 1).to(mean.dtype)    # [K, keys]
        mass = (mean @ owned.T).T.reshape(-1, frames, h, w)                   # [K, F, h, w]
        mass = torch.nn.functional.interpolate(mass.float(), size=self.layout.latent_size, mode="bilinear",
                                               align_corners=False).cpu()
        for name in (("window", "all") if in_window else ("all",)):
            self.sums[name] += mass
            self.counts[name] += 1

    def result(self) -> "AttentionRecord":
        maps = {n: self.sums[n] / max(self.counts[n], 1) for n in self.sums}
        return AttentionRecord(list(self.layout.names), maps["window"], maps["all"], dict(self.counts),
                               self.layout.masks.float().cpu())


@dataclass(eq=False)
class AttentionRecord:
    """What VideoGrainSampler hands to VideoGrainAttentionMaps: [K, F, H_lat, W_lat] per window."""

    names: list
    window: torch.Tensor
    all_steps: torch.Tensor
    counts: dict
    masks: torch.Tensor  # float [K, F, H_lat, W_lat]: the regions the maps are judged against

    def __deepcopy__(self, memo):
        return self

    def inside_share(self, steps: str = "modulated") -> torch.Tensor:
        """[K]: the share of each region prompt's attention mass that fell inside its own mask."""
        maps = self.window if steps == "modulated" else self.all_steps
        inside = (maps * self.masks).flatten(1).sum(1)
        return inside / maps.flatten(1).sum(1).clamp_min(1e-12)
