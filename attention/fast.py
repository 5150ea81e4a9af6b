"""Exact ST-Layout Attn without an Nq×Nk score matrix (docs/design.md §11).

The identity s' = (1 − w)·s + w·m + w·(M − m)·P (P = 1 on positive pairs) means that, per row,

    softmax(s') = softmax((1 − w)·s + β·P),   β = w·(M − m),

because the w·m term is constant along the row. So the modulation is a per-query rescale plus a
per-(query, key-region) bias, and only M and m need all keys (`extrema.py`). Routes, one result:

- "flex": FlexAttention with a `score_mod` applying the transform (CUDA, torch >= 2.5);
- "grouped": keys grouped by region bit pattern, one fused attention per group returning its
  log-sum-exp on q̃ = (1 − w)·q, combined with ℓ_qg = LSE_g + β_q·[g positive for q];
- "dense": query-chunked evaluation with the scores in fp32; the row extrema come from the same
  chunk, so it is a single pass. Used for short key sequences (cross-attention's 77 tokens), where
  it is the fastest exact route on every device.

Default choice: "dense" for at most DENSE_MAX_KEYS keys; otherwise "grouped" (CUDA_ROUTE on CUDA).
"flex" stays available by name: warm, it is faster per call (H200, 16 frames: 4.4 vs 5.7 ms at the 32×32
level), but torch.compile builds it per clip shape, 16 s on a fresh machine and 9 s after every restart
for one 512² clip, against 0.2 s that the grouped route adds to a whole 50-step edit
(bench/README.md, "First edit").

Rows whose β cannot matter skip the extrema work: on the grouped route rows with w = 0, no positive
key or only positive keys; inside the Triton extrema kernel, tiles of rows with w = 0.
"""
from __future__ import annotations

import functools
import warnings

import torch

from .extrema import row_extrema
from .reference import as_weight, check_inputs
from .spacetime import merge_heads, spacetime_attention, split_heads

try:
    from torch.nn.attention.flex_attention import flex_attention as _flex_attention
except Exception:  # noqa: BLE001 - torch < 2.5
    _flex_attention = None

# Key sequences up to this length use the dense route on every device (cross-attention: 77 keys).
DENSE_MAX_KEYS = 256
# Upper bound on the fp32 score elements one dense or fallback chunk materialises (64 MiB).
_CHUNK_ELEMENTS = 1 << 24
ROUTES = ("flex", "grouped", "dense")
# The automatic route for long key sequences on CUDA: "grouped" (no compile) or "flex" (compiled per shape).
CUDA_ROUTE = "grouped"
# kernel_options for FlexAttention (None: its defaults); see bench/attention_kernels.py.
FLEX_KERNEL_OPTIONS: dict | None = None


def modulated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                        q_bits: torch.Tensor, k_bits: torch.Tensor, weight, route: str | None = None) -> torch.Tensor:
    """Modulated attention, same result as `reference.modulated_attention_reference`, in q's dtype.

    q [B, Nq, heads·d], k/v [B, Nk, heads·d], q_bits int [Nq], k_bits int [Nk], weight [Nq] (w_q,
    unclamped). `route` forces one of ROUTES (tests and benchmarks); None picks the fastest exact
    route for the device and shapes.
    """
    check_inputs(q, k, heads, q_bits, k_bits)
    w = as_weight(weight, q.shape[1], q.device)
    auto = route is None
    # w = 0 everywhere: exactly plain attention. Checked on the CPU only: on a GPU the check would
    # stall the launch queue on every call, and the routes give the plain result for w = 0 anyway.
    if auto and w.device.type == "cpu" and not bool((w != 0).any()):
        return spacetime_attention(q, k, v, heads)
    route = route or choose_route(q, k)
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    q_bits = q_bits.to(q.device, torch.int64)
    k_bits = k_bits.to(q.device, torch.int64)
    qh, kh, vh = split_heads(q, heads), split_heads(k, heads), split_heads(v.to(q.dtype), heads)
    kh = kh.to(q.dtype)
    scale = qh.shape[-1] ** -0.5
    if route == "dense":
        out = _dense(qh, kh, vh, scale, q_bits, k_bits, w)
    elif route == "flex":
        out = _flex_or_grouped(qh, kh, vh, scale, q_bits, k_bits, w, fallback=auto)
    else:
        groups = KeyGroups(q_bits, k_bits)
        out = _grouped(qh, kh, vh, scale, w, _beta(qh, kh, scale, w, groups), groups)
    return merge_heads(out).to(q.dtype)


def choose_route(q: torch.Tensor, k: torch.Tensor) -> str:
    """The fastest exact route for these inputs (see the module docstring)."""
    if k.shape[1] <= DENSE_MAX_KEYS:
        return "dense"
    if q.device.type == "cuda":
        return "flex" if CUDA_ROUTE == "flex" and flex_available() else "grouped"
    # On the CPU the blocked flash kernel with log-sum-exp makes "grouped" about 2x faster than
    # "dense" for self-attention (measured: 4096 tokens, 8 heads, d = 80: 1.25 s vs 2.6 s).
    return "grouped" if _cpu_lse_kernel() else "dense"


def _cpu_lse_kernel() -> bool:
    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def flex_available() -> bool:
    """True when FlexAttention exists and CUDA is present (a variant that fails to compile falls back)."""
    return _flex_attention is not None and torch.cuda.is_available()


class KeyGroups:
    """The distinct region bit patterns among the keys and which queries each is positive for."""

    def __init__(self, q_bits: torch.Tensor, k_bits: torch.Tensor):
        self.patterns, self.inverse = torch.unique(k_bits, return_inverse=True)   # [G], [Nk]
        # [Nq, G]: is pattern g positive for query q. G is small (distinct region overlaps).
        self.positive = (q_bits[:, None] & self.patterns[None, :]) != 0

    def rows_needing_extrema(self, w: torch.Tensor) -> torch.Tensor:
        """Indices of queries whose β changes the result: w ≠ 0 and both positive and negative keys."""
        mixed = self.positive.any(1) & ~self.positive.all(1)
        return torch.nonzero(mixed & (w != 0)).flatten()

    def keys(self, g: int) -> torch.Tensor:
        """Key indices of pattern g."""
        return torch.nonzero(self.inverse == g).flatten()


def _beta(qh, kh, scale, w, groups: KeyGroups) -> torch.Tensor:
    """β = w·(M − m) fp32 [B, H, Nq]; zero on rows where it cannot matter."""
    b, h, nq, _ = qh.shape
    beta = torch.zeros(b, h, nq, dtype=torch.float32, device=qh.device)
    rows = groups.rows_needing_extrema(w)
    if rows.numel() == 0:
        return beta
    sel = qh if rows.numel() == nq else qh.index_select(2, rows)
    rmax, rmin = row_extrema(sel, kh, scale)
    beta[:, :, rows] = w[rows] * (rmax - rmin)
    return beta


def _dense(qh, kh, vh, scale, q_bits, k_bits, w) -> torch.Tensor:
    """fp32 [B, H, Nq, d]: the transformed softmax evaluated a query chunk at a time, in one pass."""
    b, h, nq, _ = qh.shape
    nk = kh.shape[2]
    kt = kh.float().transpose(-1, -2)
    vf = vh.float()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * h * nk))
    out = torch.empty(b, h, nq, vh.shape[-1], dtype=torch.float32, device=qh.device)
    for start in range(0, nq, chunk):
        rows = slice(start, start + chunk)
        s = (qh[:, :, rows].float() @ kt).mul_(scale)                        # [B, H, c, Nk]
        wc = w[rows][:, None]
        beta = wc * (s.amax(-1, keepdim=True) - s.amin(-1, keepdim=True))   # [B, H, c, 1]
        pos = (q_bits[rows][:, None] & k_bits[None, :]) != 0                # [c, Nk]
        s.mul_(1.0 - wc).add_(torch.where(pos, beta, beta.new_zeros(())))
        out[:, :, rows] = torch.softmax(s, dim=-1) @ vf
        del s
    return out


# ---------------------------------------------------------------- FlexAttention route

# Tiles measured fastest on an H200 (torch 2.11, fp16, 8 heads, d = 80 and 160): 10–13 % faster than
# FlexAttention's defaults. Used on Hopper for half dtypes only, where they fit in shared memory.
_HOPPER_FLEX_OPTIONS = {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
# (dtype, head dim, padded, tuned tiles) -> why that FlexAttention variant failed to build here.
_flex_failures: dict[tuple, str] = {}


class FlexUnavailable(RuntimeError):
    """No FlexAttention variant could be compiled for these inputs on this machine."""


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    # Static shapes: a kernel compiled with symbolic sequence lengths measured up to 2x slower
    # (H200, 16 frames, 16x16 level). Each clip size compiles once per level; see _recompile_headroom.
    return torch.compile(_flex_attention, dynamic=False)


def _recompile_headroom():
    """Context raising dynamo's per-function recompile limit (default 8) during our call.

    Past the limit torch silently runs flex_attention eagerly, which materialises every score; a
    compile per (level, clip size) is far cheaper than that.
    """
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    return cfg.patch(**{name: max(getattr(cfg, name), 256)})


def _kernel_options(qh: torch.Tensor) -> dict | None:
    if FLEX_KERNEL_OPTIONS is not None:
        return dict(FLEX_KERNEL_OPTIONS)
    if (qh.device.type == "cuda" and qh.dtype in (torch.float16, torch.bfloat16)
            and torch.cuda.get_device_capability(qh.device)[0] == 9):
        return dict(_HOPPER_FLEX_OPTIONS)
    return None


def _pad_head(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else torch.nn.functional.pad(x, (0, size - x.shape[-1]))


def _flex(qh, kh, vh, scale, q_bits, k_bits, w, beta) -> torch.Tensor:
    """FlexAttention with score_mod = score·(1 − w[q]) + β[b, h, q]·[q, k share a region].

    The score_mod runs in fp32 on the already scaled score, and the kernel accumulates the
    softmax in fp32, so only the inputs and the output carry their half precision. Returns
    [B, H, Nq, d] in the input dtype; raises FlexUnavailable when no variant compiles.
    """
    one_minus_w = (1.0 - w).contiguous()

    def score_mod(score, b, h, q_idx, kv_idx):
        positive = (q_bits[q_idx] & k_bits[kv_idx]) != 0
        return score * one_minus_w[q_idx] + torch.where(positive, beta[b, h, q_idx], 0.0)

    if qh.device.type != "cuda":  # eager FlexAttention (materialises scores): tests of the score_mod
        return _flex_attention(qh, kh, vh, score_mod=score_mod, scale=scale)
    d = qh.shape[-1]
    dp = max(16, 1 << (d - 1).bit_length())
    tuned = _kernel_options(qh)
    # Try the head dim as is (recent torch rounds it inside the kernel, no copies), then zero-padded
    # to a power of two (zeros leave q·k unchanged; the true scale is passed; padding is dropped);
    # tuned tiles first, then FlexAttention's defaults.
    variants = [(pad, opts) for pad in ((False, True) if dp != d else (False,))
                for opts in ((tuned, None) if tuned else (None,))]
    last = "no variant tried"
    for pad, opts in variants:
        key = (qh.dtype, d, pad, opts is not None)
        if key in _flex_failures:
            last = _flex_failures[key]
            continue
        size = dp if pad else d
        try:
            with _recompile_headroom():
                out = _compiled_flex()(_pad_head(qh, size), _pad_head(kh, size), _pad_head(vh, size),
                                       score_mod=score_mod, scale=scale, kernel_options=opts)
            return out[..., :vh.shape[-1]] if pad else out
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - compiler/toolchain limits differ per GPU and torch
            if type(exc).__name__ == "InterruptProcessingException":  # a cancel (an Exception on 0.3.75)
                raise
            last = _flex_failures[key] = f"{type(exc).__name__}: {exc}"
    raise FlexUnavailable(last)


def _flex_or_grouped(qh, kh, vh, scale, q_bits, k_bits, w, fallback: bool = True) -> torch.Tensor:
    """The flex route; with `fallback`, the grouped route where no FlexAttention variant compiles."""
    # No host synchronisation on this route: every row gets β (tiles of rows with w = 0 skip the
    # extrema loop; for rows with no or only positive keys β shifts the row by a constant).
    rmax, rmin = row_extrema(qh, kh, scale, w)
    beta = w * (rmax - rmin)
    try:
        return _flex(qh, kh, vh, scale, q_bits, k_bits, w, beta)
    except FlexUnavailable as exc:
        if not fallback:
            raise
        key = (qh.dtype, qh.shape[-1])
        if key not in _warned:
            _warned.add(key)
            warnings.warn(f"VideoGrain: FlexAttention unavailable for {qh.dtype}, head dim {qh.shape[-1]} "
                          f"({str(exc)[:300]}); using the region-grouped attention", RuntimeWarning)
    return _grouped(qh, kh, vh, scale, w, beta, KeyGroups(q_bits, k_bits))


_warned: set = set()


# ---------------------------------------------------------------- region-grouped route

def _attention_lse(q, k, v, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """(out fp32 [B, H, Nq, d], logsumexp fp32 [B, H, Nq]) of plain softmax(scale·q·kᵀ)·v."""
    if q.device.type == "cpu" and _cpu_lse_kernel():
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
        return out.float(), lse.float()
    if q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
        try:  # FlashAttention-2 returns its log-sum-exp; head dims up to 256
            res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
            return res[0].float(), res[1].float()
        except (RuntimeError, AttributeError):
            pass
    if q.device.type == "cuda" and hasattr(torch.ops.aten, "_scaled_dot_product_efficient_attention"):
        try:
            res = torch.ops.aten._scaled_dot_product_efficient_attention(
                q.contiguous(), k.contiguous(), v.contiguous(), None, True, 0.0, False, scale=scale)
            return res[0].float(), res[1][..., :q.shape[2]].float()
        except RuntimeError:
            pass  # unsupported dtype/shape: fall through to the chunked evaluation
    return _attention_lse_chunked(q, k, v, scale)


def _attention_lse_chunked(q, k, v, scale) -> tuple[torch.Tensor, torch.Tensor]:
    """Portable (out, logsumexp) with bounded memory: query chunks against all keys of the group."""
    b, h, nq, _ = q.shape
    kt, vf = k.float().transpose(-1, -2), v.float()
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * h * k.shape[2]))
    out = torch.empty(b, h, nq, v.shape[-1], dtype=torch.float32, device=q.device)
    lse = torch.empty(b, h, nq, dtype=torch.float32, device=q.device)
    for start in range(0, nq, chunk):
        s = (q[:, :, start:start + chunk].float() @ kt).mul_(scale)
        lse[:, :, start:start + chunk] = torch.logsumexp(s, dim=-1)
        out[:, :, start:start + chunk] = torch.softmax(s, dim=-1) @ vf
        del s
    return out, lse


def _grouped(qh, kh, vh, scale, w, beta, groups: KeyGroups) -> torch.Tensor:
    """Per key group: (O_g, LSE_g) on q̃ = (1 − w)·q, merged by log-sum-exp with the β bias."""
    # q̃ in fp32 for fp32 inputs; half inputs keep their dtype (the fused kernels need it), which
    # rounds (1 − w)·q once more at that precision.
    q_tilde = (qh.float() * (1.0 - w)[:, None]).to(qh.dtype)
    total_lse, total_out = None, None
    for g in range(groups.patterns.numel()):
        idx = groups.keys(g)
        out_g, lse_g = _attention_lse(q_tilde, kh.index_select(2, idx), vh.index_select(2, idx), scale)
        lse_g = lse_g + beta * groups.positive[:, g].to(beta.dtype)
        if total_lse is None:
            total_lse, total_out = lse_g, out_g
            continue
        new_lse = torch.logaddexp(total_lse, lse_g)
        total_out = (total_out * torch.exp(total_lse - new_lse)[..., None]
                     + out_g * torch.exp(lse_g - new_lse)[..., None])
        total_lse = new_lse
    return total_out
