"""The per-call attention replacements behind the UNet's attn1/attn2 (docs/design.md §5–§8).

ComfyUI calls a replacement as `fn(q, k, v, extra_options)` with projected q, k, v of shape
`[B, N, heads·dim]`, where B = (number of CFG chunks) × F frames. The patches split the batch by
`cond_or_uncond` (never by position), run full space-time self-attention over all F frames of a
branch (§7), and, inside the modulation window, reshape the scores with the region layout through the
math in `reference.py` / `fast.py`. The patches are stateless per call apart from caches of derived
per-size tensors; nothing here imports ComfyUI.
"""
from __future__ import annotations

import contextlib
import threading

import torch

from ..sampling.schedule import sigma_to_timestep, step_index
from .fast import modulated_attention
from .recorder import RECORDER_KEY, AttentionRecorder
from .reference import modulated_probs
from .settings import COND, STLayoutSettings, StepRecord, modulation_weight
from .spacetime import spacetime_attention
from .trajectory import TRAJECTORIES_KEY, trajectory_attention
from .windows import WINDOWS_KEY, TemporalWindows, modulated_attend, plain_attend, windowed_attention


# transformer_options key of a context-manager factory under which tensors kept across model calls are
# created (the node layer sets ComfyUI's `model_prefetch.pause_malloc_graph` where it exists, so such
# tensors stay outside a captured allocation graph; absent on ComfyUI 0.3.75).
ALLOC_GUARD_KEY = "videograin_alloc_guard"
# transformer_options key of the run's `attention.pnp.PnPSession` (PnP feature recording or injection).
PNP_SESSION_KEY = "videograin_pnp_session"


def alloc_guard(extra_options: dict):
    """The context under which to create tensors that outlive this call (a no-op without a guard)."""
    factory = extra_options.get(ALLOC_GUARD_KEY)
    return factory() if callable(factory) else contextlib.nullcontext()


class AttentionPatchError(RuntimeError):
    """The UNet called the patch with a batch that cannot be a whole clip per CFG branch."""


def cfg_chunks(extra_options: dict, batch: int) -> tuple[list[int], int]:
    """CFG codes of the batch chunks and the frame count of each chunk."""
    codes = list(extra_options.get("cond_or_uncond") or [COND])
    if batch % len(codes):
        raise AttentionPatchError(
            f"VideoGrain attention: batch {batch} does not split into {len(codes)} CFG chunks of whole clips")
    return codes, batch // len(codes)


def spatial_size(extra_options: dict, tokens: int) -> tuple[int, int]:
    """(h, w) of this layer's token grid, from the activations ComfyUI reports."""
    shape = extra_options.get("activations_shape") or extra_options.get("original_shape")
    h, w = int(shape[-2]), int(shape[-1])
    if h * w != tokens:
        raise AttentionPatchError(f"VideoGrain attention: {tokens} tokens do not match activations {h}x{w}")
    return h, w


def step_record(extra_options: dict) -> StepRecord | None:
    """The call's place in its sampling run, or None outside one."""
    sigmas, schedule = extra_options.get("sigmas"), extra_options.get("sample_sigmas")
    if sigmas is None or schedule is None:
        return None
    sigma = float(sigmas.reshape(-1)[0])
    return StepRecord(step_index(schedule, sigma), max(len(schedule) - 1, 1), sigma_to_timestep(sigma))


def layer_trajectories(extra_options: dict, tokens: int):
    """The model's `Trajectories` for this layer's token grid, or None (none set, or not at this size)."""
    trajectories = extra_options.get(TRAJECTORIES_KEY)
    if not trajectories:
        return None
    return trajectories.get(spatial_size(extra_options, tokens))


def branch_self_attention(qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, heads: int, extra_options: dict,
                          modulation: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The self-attention of one CFG branch: q/k/v [F, N, C] → [F, N, C].

    Full space-time attention over all F·N tokens (docs/design.md §7), or over the temporal windows
    of the model's `TemporalWindows` (docs/design.md §16); ST-Layout modulated when `modulation` =
    (query region bits, weight w) is given (§5.3), the keys' bits being the queries' own. When the
    model carries trajectories for this layer's grid (VideoGrainTrajectoryAttention), the result is
    then replaced by trajectory attention with the layer's q/k and the space-time output as v
    (docs/design.md §10.1).
    """
    frames, tokens, width = qc.shape
    qs, ks, vs = qc.reshape(1, -1, width), kc.reshape(1, -1, width), vc.reshape(1, -1, width)
    windows: TemporalWindows | None = extra_options.get(WINDOWS_KEY)
    if windows is None or windows.plan(frames).single:
        if modulation is None:
            out = spacetime_attention(qs, ks, vs, heads)
        else:
            out = modulated_attention(qs, ks, vs, heads, modulation[0], modulation[0], modulation[1])
    else:
        attend = plain_attend(heads) if modulation is None else \
            modulated_attend(heads, modulation[0], modulation[0], modulation[1])
        out = windowed_attention(qs, ks, vs, heads, windows.plan(frames), frames, attend)
    traj = layer_trajectories(extra_options, tokens)
    if traj is not None:
        out = trajectory_attention(qs, ks, out, heads, traj)
    return out.reshape(frames, tokens, width)


def pnp_qk(q: torch.Tensor, k: torch.Tensor, extra_options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """attn1's q/k after the run's PnP session (recorded in inversion, swapped in in the first editing steps
    at output_blocks[4]–[9]); unchanged without a session (docs/design.md §10)."""
    session = extra_options.get(PNP_SESSION_KEY)
    return (q, k) if session is None else session.qk(q, k, extra_options)


class SpaceTimeSelfAttention:
    """attn1 replacement without modulation: each CFG branch attends over all of its frames."""

    def __deepcopy__(self, memo):  # ComfyUI deep-copies model_options; the patch is immutable
        return self

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        codes, frames = cfg_chunks(extra_options, q.shape[0])
        q, k = pnp_qk(q, k, extra_options)
        chunks, tokens, width = len(codes), q.shape[1], q.shape[2]
        if extra_options.get(WINDOWS_KEY) is None:  # both branches in one fused call
            qs, ks = q.reshape(chunks, frames * tokens, width), k.reshape(chunks, frames * k.shape[1], width)
            out = spacetime_attention(qs, ks, v.reshape(chunks, frames * v.shape[1], width), heads)
            traj = layer_trajectories(extra_options, tokens)
            if traj is not None:  # the branches share the trajectories: one batched call (docs/design.md §10.1)
                out = trajectory_attention(qs, ks, out, heads, traj)
            return out.reshape(q.shape[0], tokens, width)
        rows = [slice(c * frames, (c + 1) * frames) for c in range(chunks)]
        return torch.cat([branch_self_attention(q[r], k[r], v[r], heads, extra_options) for r in rows])


class STLayoutAttention:
    """attn1 or attn2 replacement of one modulated block: space-time attention plus ST-Layout Attn.

    `kind` is "self" (attn1) or "cross" (attn2). `layout` is a `masks.layout.RegionLayout`.
    """

    def __init__(self, kind: str, layout, settings: STLayoutSettings):
        if kind not in ("self", "cross"):
            raise ValueError(f"kind must be 'self' or 'cross', got {kind!r}")
        self.kind, self.layout, self.settings = kind, layout, settings
        self.strength = settings.strength(kind)
        self.branches = settings.branches(kind)
        self._cache: dict = {}
        self._lock = threading.Lock()  # cond and uncond may run in two threads (current ComfyUI)

    def __deepcopy__(self, memo):
        return self

    def _region_terms(self, h: int, w: int, device, extra_options: dict | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """(query region bits, area term) for this layer size, cached per size and device; created under
        the model's allocation guard (`ALLOC_GUARD_KEY`), as they outlive the call."""
        key = (h, w, str(device))
        with self._lock:
            if key not in self._cache:
                with alloc_guard(extra_options or {}):
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
        codes, frames = cfg_chunks(extra_options, q.shape[0])
        if frames != self.layout.frames:
            raise AttentionPatchError(
                f"VideoGrain ST-Layout: the UNet runs {frames} frames per CFG branch but the layout has "
                f"{self.layout.frames}; sample the latent the layout was built from")
        h, w = spatial_size(extra_options, q.shape[1])
        if self.kind == "self":
            q, k = pnp_qk(q, k, extra_options)
        step = step_record(extra_options)
        in_window = self.settings.in_window(step)
        active = in_window and self.strength != 0.0
        recorder: AttentionRecorder | None = extra_options.get(RECORDER_KEY)
        if recorder is not None:
            recorder.hit(self.kind, extra_options.get("block"))
            if self.kind != "cross" or not recorder.wants(self.settings, step):
                recorder = None  # only cross-attention maps are recorded, and only on some steps

        outs = []
        for chunk, code in enumerate(codes):
            rows = slice(chunk * frames, (chunk + 1) * frames)
            qc, kc, vc = q[rows], k[rows], v[rows]
            modulate = active and code in self.branches
            record = recorder is not None and code == COND
            if self.kind == "self":
                modulation = None
                if modulate:
                    q_bits, area = self._region_terms(h, w, q.device, extra_options)
                    modulation = (q_bits, modulation_weight(self.strength, step, area))
                outs.append(branch_self_attention(qc, kc, vc, heads, extra_options, modulation))
                continue
            if not (modulate or record):
                outs.append(spacetime_attention(qc, kc, vc, heads))
                continue
            outs.append(self._cross_attention(qc, kc, vc, heads, h, w, step, modulate,
                                              recorder if record else None, in_window, extra_options))
        return torch.cat(outs, dim=0)

    def _cross_attention(self, qc, kc, vc, heads, h, w, step: StepRecord, modulate: bool,
                         recorder: AttentionRecorder | None, in_window: bool, extra_options: dict | None = None):
        """One branch's cross-attention: every frame sees the same text, so the frames' queries form one
        sequence against the 77 keys of the first frame. Recording never changes the output."""
        frames, tokens, width = qc.shape
        q_bits, area = self._region_terms(h, w, qc.device, extra_options)
        weight = modulation_weight(self.strength, step, area) if modulate else torch.zeros_like(area)
        k_bits = self._key_bits(kc.shape[1], qc.device)
        qs = qc.reshape(1, frames * tokens, width)
        if recorder is not None:
            probs = modulated_probs(qs, kc[:1], heads, q_bits, k_bits, weight)
            recorder.add(probs, k_bits, frames, h, w, in_window)
            del probs
        if not modulate:  # recording only: the output stays exactly what plain attention gives
            return spacetime_attention(qc, kc, vc, heads)
        return modulated_attention(qs, kc[:1], vc[:1], heads, q_bits, k_bits, weight).reshape(frames, tokens, width)
