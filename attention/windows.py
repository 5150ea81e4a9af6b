"""Temporal windows with anchor frames for the space-time self-attention (docs/design.md §16).

Full space-time self-attention (docs/design.md §7) lets every token of every frame attend to all
F·h·w tokens of its CFG branch, so its cost grows as F². Windowed attention splits the clip into
windows of W frames that overlap by a few frames; the queries of a window attend to the keys of its
own frames plus those of a few *anchor* frames shared by every window, so appearance and identity
agree across windows; the outputs of overlapping windows are blended per frame. The cost is then
linear in F: about F/(W − overlap) windows of W·N queries against at most (W + anchors)·N keys.

With W ≥ F there is one window holding every frame and the call is exactly full attention.

The modulated call (docs/design.md §5.3, §11) inside a window is the plain ST-Layout update on the
window's keys: the row extrema M_q and m_q run over the window's keys (its frames plus the anchors),
anchor keys are positive or negative by their own region bits like any other key, and the weight
w_q (with the clip's area term) is passed in unchanged. Nothing here imports ComfyUI.
"""
from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .fast import modulated_attention
from .spacetime import spacetime_attention

# Blend weights are multiples of 1/QUANTUM: every partial sum of a frame's weights is then exactly
# representable in fp32 and fp64, so the weights of a frame sum to exactly 1.0 in any order.
QUANTUM = 1 << 20

# attend(q_w, k_w, v_w, q_index, k_index) -> [B, len(q_index), C_out]
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class WindowError(ValueError):
    """A window setting that cannot be planned; names the input, the problem and the fix.

    `input_name`, `problem` and `fix` are kept so the node layer can re-raise it as
    VideoGrainInputError(node, input_name, problem, fix).
    """

    def __init__(self, input_name: str, problem: str, fix: str):
        self.input_name, self.problem, self.fix = input_name, problem, fix
        super().__init__(f"{input_name}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class WindowPlan:
    """Which frames each window holds, the anchor frames and the per-frame blend weights.

    `windows[i]` is the half-open frame range (start, stop) of window i, in increasing order; all
    windows have min(window, frames) frames. `weights[i][j]` is the blend weight of frame
    start_i + j in window i; for every frame the weights of the windows holding it sum to 1.0
    exactly. `anchor_frames` are shared by all windows (ascending, distinct).
    """

    frames: int
    window: int
    overlap: int
    anchors: int
    windows: tuple[tuple[int, int], ...]
    anchor_frames: tuple[int, ...]
    weights: tuple[tuple[float, ...], ...]

    @property
    def single(self) -> bool:
        """True when one window holds the whole clip (W ≥ F): exactly full attention."""
        return len(self.windows) == 1

    def key_frames(self, i: int) -> tuple[int, ...]:
        """Frames whose keys window i attends to: its own frames and the anchors outside it, ascending."""
        start, stop = self.windows[i]
        return tuple(sorted(set(range(start, stop)) | set(self.anchor_frames)))

    def blend_weights(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """[windows, frames]: each window's weight per frame (0 for frames outside the window)."""
        table = torch.zeros(len(self.windows), self.frames, dtype=dtype)
        for i, ((start, stop), w) in enumerate(zip(self.windows, self.weights)):
            table[i, start:stop] = torch.tensor(w, dtype=dtype)
        return table


def _count(name: str, value, minimum: int, fix: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise WindowError(name, f"must be a whole number, got {value!r}", fix) from None
    if value < minimum:
        raise WindowError(name, f"must be at least {minimum}, got {value}", fix)
    return value


def plan_windows(frames: int, window: int, overlap: int, anchors: int) -> WindowPlan:
    """Plan windows of `window` frames overlapping by `overlap`, with `anchors` shared anchor frames.

    Windows start every (window − overlap) frames from 0; the last one is shifted back to end at the
    last frame, so every window has `window` frames (its overlap with the previous one can then be
    larger). With window ≥ frames there is a single window holding all frames.

    Anchors: anchor i (of A) is frame floor((2i + 1)·F / (2A)), the middle of the i-th of A equal
    slices of the clip, so one anchor is the middle frame and A = F gives every frame.

    Blend weights: linear ramps across each overlap with the neighbouring windows (a window's
    weight rises (j + 1)/(o + 1) over the o frames it shares with the window before it, falls
    symmetrically toward the next one, and is 1 in between), normalised per frame and rounded to
    multiples of 1/QUANTUM so that every frame's weights sum to exactly 1. Where two windows share
    a frame the ramps already sum to one; where more do, the normalisation shares it out.
    Raises WindowError for window < 2, overlap < 0, overlap ≥ window, anchors < 0 or > frames.
    """
    frames = _count("frames", frames, 1, "pass the clip's frame count (at least 1)")
    window = _count("window", window, 2, "use a window of at least 2 frames, or at least the clip's frame "
                                          "count for full space-time attention")
    overlap = _count("overlap", overlap, 0, "use an overlap of 0 or more frames")
    if overlap >= window:
        raise WindowError("overlap", f"must be smaller than the window ({window} frames), got {overlap}",
                          f"use an overlap between 0 and {window - 1} frames")
    anchors = _count("anchors", anchors, 0, "use 0 or more anchor frames")
    if anchors > frames:
        raise WindowError("anchors", f"the clip has {frames} frames but {anchors} anchor frames were asked for",
                          f"use at most {frames} anchor frames")

    size = min(window, frames)
    if frames <= window:
        starts = [0]
    else:
        stride = window - overlap
        count = -(-(frames - window) // stride) + 1        # ceil((F − W)/stride) + 1
        starts = [i * stride for i in range(count - 1)] + [frames - window]
    spans = tuple((s, s + size) for s in starts)
    anchor_frames = tuple((2 * i + 1) * frames // (2 * anchors) for i in range(anchors))
    return WindowPlan(frames, window, overlap, anchors, spans, anchor_frames, _blend(spans, frames))


def _blend(spans: tuple[tuple[int, int], ...], frames: int) -> tuple[tuple[float, ...], ...]:
    """Per-window weights of its frames: linear ramps over the overlaps, per-frame sums exactly 1."""
    raw = []
    for i, (start, stop) in enumerate(spans):
        left = spans[i - 1][1] - start if i > 0 else 0              # frames shared with the previous window
        right = stop - spans[i + 1][0] if i + 1 < len(spans) else 0  # ... and with the next one
        raw.append([min(1.0, (f - start + 1) / (left + 1)) * min(1.0, (stop - f) / (right + 1))
                    for f in range(start, stop)])                     # > 0 on every frame of the window
    quanta = [[0] * (stop - start) for start, stop in spans]
    for f in range(frames):
        holders = [i for i, (start, stop) in enumerate(spans) if start <= f < stop]
        total = sum(raw[i][f - spans[i][0]] for i in holders)
        left_over = QUANTUM
        for i in holders[:-1]:
            q = int(raw[i][f - spans[i][0]] / total * QUANTUM + 0.5)
            quanta[i][f - spans[i][0]] = q
            left_over -= q
        quanta[holders[-1]][f - spans[holders[-1]][0]] = left_over   # the last window takes the rest
    return tuple(tuple(q / QUANTUM for q in row) for row in quanta)


def _token_index(frames: tuple[int, ...], per_frame: int, device) -> torch.Tensor:
    """LongTensor of the token indices of `frames` (frame-major), strictly increasing."""
    f = torch.tensor(frames, dtype=torch.long, device=device)
    return (f[:, None] * per_frame + torch.arange(per_frame, device=device)[None, :]).flatten()


def _frame_tokens(x: torch.Tensor, frames: tuple[int, ...], per_frame: int, index: torch.Tensor) -> torch.Tensor:
    """The tokens of `frames` along dim 1: a view when the frames are contiguous, else a gather."""
    if frames[-1] - frames[0] + 1 == len(frames):
        return x[:, frames[0] * per_frame:(frames[-1] + 1) * per_frame]
    return x.index_select(1, index)


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, plan: WindowPlan,
                       frames: int, attend: Attend) -> torch.Tensor:
    """Self-attention of one CFG branch over temporal windows with anchor frames, blended per frame.

    q [B, F·N, C], k/v [B, F·N_k, C] (frame-major; B is 1 for one CFG branch). For each window of
    `plan`, `attend(q_w, k_w, v_w, q_index, k_index)` receives the window's query tokens, the keys
    and values of the window's frames plus the anchor frames outside it (ascending frame order),
    and the LongTensors of their token indices into 0..F·N−1 and 0..F·N_k−1 (strictly increasing,
    on q's device), so it can gather per-token region bits and weights. It returns
    [B, len(q_index), C_out]. Outputs are blended per frame with the plan's weights; a frame held
    by one window gets that window's output unchanged.

    Modulated attends see only the window's keys, so the row extrema M_q, m_q of the ST-Layout
    update are over the window's keys (its frames and the anchors): the intended windowed
    semantics. The weight (with the clip's area term) is the caller's, unchanged.

    With a single window (W ≥ F) `attend` is called once on the untouched q, k, v with the full
    index ranges and its result is returned as is: bit-identical to full attention.

    Key counts differ between windows (the anchors already inside a window are not repeated), so a
    shape-specialised kernel (compiled FlexAttention) sees at most `anchors` + 1 key lengths per level.

    Cost: windows run one at a time (peak memory is one window's attention), and the output is
    accumulated in place in one [B, F·N, C_out] tensor. `heads` is kept for the factories' sake and
    checked against C.
    """
    if plan.frames != frames:
        raise WindowError("frames", f"the window plan is for {plan.frames} frames but the clip has {frames}",
                          "plan the windows for this clip's frame count")
    if q.dim() != 3 or k.dim() != 3 or v.shape[:2] != k.shape[:2]:
        raise ValueError(f"q, k, v must be [B, F*N, C] with matching k and v, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[1] % frames or k.shape[1] % frames:
        raise ValueError(f"{q.shape[1]} query and {k.shape[1]} key tokens do not split into {frames} frames")
    if q.shape[2] % heads:
        raise ValueError(f"channel count {q.shape[2]} is not divisible by {heads} heads")
    n_q, n_k = q.shape[1] // frames, k.shape[1] // frames
    if plan.single:
        return attend(q, k, v, torch.arange(q.shape[1], device=q.device), torch.arange(k.shape[1], device=q.device))

    out = None
    done = 0  # frames [0, done) already hold a contribution (windows are sorted and contiguous)
    for i, ((start, stop), w) in enumerate(zip(plan.windows, plan.weights)):
        own, keyed = tuple(range(start, stop)), plan.key_frames(i)
        q_index = _token_index(own, n_q, q.device)
        k_index = _token_index(keyed, n_k, q.device)
        res = attend(q[:, start * n_q:stop * n_q], _frame_tokens(k, keyed, n_k, k_index),
                     _frame_tokens(v, keyed, n_k, k_index), q_index, k_index)
        if res.shape[:2] != (q.shape[0], len(own) * n_q):
            raise ValueError(f"attend returned {tuple(res.shape)} for {len(own) * n_q} queries")
        if out is None:
            out = res.new_empty(q.shape[0], q.shape[1], res.shape[2])
        _accumulate(out.view(q.shape[0], frames, n_q, -1), res.view(q.shape[0], len(own), n_q, -1),
                    start, stop, done, w)
        done = max(done, stop)
        del res
    return out


def _accumulate(out: torch.Tensor, res: torch.Tensor, start: int, stop: int, done: int,
                weights: tuple[float, ...]) -> None:
    """out[:, start:stop] (+)= w·res per frame; frames before `done` add, later ones are written.

    Half-precision outputs are blended in fp32 and rounded once per window; a weight of exactly 1
    copies the window's output unchanged.
    """
    work = torch.float32 if res.dtype in (torch.float16, torch.bfloat16) else res.dtype
    w = torch.tensor(weights, dtype=work, device=res.device)[None, :, None, None]
    split = min(max(done, start), stop) - start          # frames [start, start + split) were seen before
    if split:
        out[:, start:start + split] = (out[:, start:start + split].to(work)
                                       + res[:, :split].to(work) * w[:, :split]).to(out.dtype)
    if split < stop - start:
        out[:, start + split:stop] = (res[:, split:].to(work) * w[:, split:]).to(out.dtype)


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[index]; the tensor itself when `index` is the full range (windowed_attention's indices
    are strictly increasing, so as many of them as values means 0..n−1)."""
    if index.numel() == values.shape[0]:
        return values
    return values[index.to(values.device)]


def plain_attend(heads: int) -> Attend:
    """An attend for windowed_attention: plain space-time attention over the window's keys."""
    def attend(q_w, k_w, v_w, q_index, k_index):
        return spacetime_attention(q_w, k_w, v_w, heads)
    return attend


def modulated_attend(heads: int, q_bits: torch.Tensor, k_bits: torch.Tensor, weight,
                     route: str | None = None) -> Attend:
    """An attend for windowed_attention: fast.modulated_attention with the window's gathered terms.

    q_bits int64 [F·N], k_bits int64 [F·N_k] and weight [F·N] (or a number) are the clip's; each
    window gets q_bits[q_index], k_bits[k_index] (anchor keys keep their own bits) and
    weight[q_index]. `route` is passed to modulated_attention.
    """
    per_query = isinstance(weight, torch.Tensor) and weight.dim() > 0

    def attend(q_w, k_w, v_w, q_index, k_index):
        w = _take(weight, q_index) if per_query else weight
        return modulated_attention(q_w, k_w, v_w, heads, _take(q_bits, q_index), _take(k_bits, k_index), w,
                                   route=route)
    return attend


@dataclass(frozen=True)
class TemporalWindows:
    """The windows a user asked for (VideoGrainTemporalWindows); `plan(frames)` fits them to a clip.

    Lives in the model's transformer_options under `WINDOWS_KEY`, so inversion and editing, which
    both take that model, use the same windows.
    """

    window: int
    overlap: int
    anchors: int

    def __post_init__(self) -> None:
        plan_windows(max(self.window, self.anchors, 1), self.window, self.overlap, self.anchors)  # validates

    def plan(self, frames: int) -> WindowPlan:
        """The window plan for a clip of `frames` frames (WindowError when it has fewer than the anchors)."""
        return _cached_plan(frames, self.window, self.overlap, self.anchors)

    def __deepcopy__(self, memo):
        return self


WINDOWS_KEY = "videograin_windows"  # transformer_options key of a TemporalWindows


@functools.lru_cache(maxsize=64)
def _cached_plan(frames: int, window: int, overlap: int, anchors: int) -> WindowPlan:
    return plan_windows(frames, window, overlap, anchors)
