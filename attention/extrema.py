"""Exact row max and min of the attention scores without keeping a score matrix (docs/design.md §11, step 1).

M_q and m_q are the only quantities of ST-Layout Attn that need every key of a row at once. On CUDA
a Triton kernel streams key tiles through one GEMM per tile and keeps a running max/min in registers
(memory O(tile²), cost about one QKᵀ, no HBM traffic for scores); elsewhere a query-chunked
matmul + amax/amin does the same with bounded memory.
"""
from __future__ import annotations

import warnings

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs run the torch path.
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - any import failure just means "no Triton"
    triton = None

_triton_failure: str | None = None  # why the Triton kernel could not run here, once it failed
# Upper bound on the fp32 score elements one chunk of the torch path materialises (64 MiB).
_CHUNK_ELEMENTS = 1 << 24


def row_extrema_torch(qh: torch.Tensor, kh: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, min) fp32 [B, H, R] of scale·q·kᵀ over all keys, chunking queries to bound memory."""
    b, h, r, _ = qh.shape
    kt = kh.float().transpose(-1, -2)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, b * h * kh.shape[2]))
    rmax = torch.empty(b, h, r, dtype=torch.float32, device=qh.device)
    rmin = torch.empty_like(rmax)
    for start in range(0, r, chunk):
        s = qh[:, :, start:start + chunk].float() @ kt
        rmax[:, :, start:start + chunk] = s.amax(-1)
        rmin[:, :, start:start + chunk] = s.amin(-1)
        del s
    # scale > 0, so scaling the extrema equals taking the extrema of the scaled scores.
    return rmax * scale, rmin * scale


def _split_head_dim(d: int) -> tuple[int, int]:
    """(D1, D2): D1 the largest power of two <= d, D2 the power of two >= 16 covering the rest (0 if none).

    tl.dot needs power-of-two tiles; 80 = 64 + 16 and 160 = 128 + 32 waste nothing, where one
    padded tile (128, 256) would add 60 % of multiply work.
    """
    d1 = 1 << (d.bit_length() - 1)
    if d1 < 16:
        return 16, 0
    rest = d - d1
    return d1, (0 if rest == 0 else max(16, 1 << (rest - 1).bit_length()))


# Tile configs (BLOCK_M, BLOCK_N, num_warps, num_stages). No autotuning: Triton's autotuner re-benchmarks
# every config for each new key count and again in every process (measured on an H200: 2.8 s of a
# restarted ComfyUI's first edit, 8.8 s on a fresh machine), while one fixed config compiles once per
# head-dim signature and stays in Triton's disk cache. `launch_config` picks it; bench/compile_stall.py
# --sweep times all of them.
EXTREMA_CONFIGS = [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 4), (64, 128, 4, 3), (64, 64, 4, 2), (32, 32, 4, 2)]
_SHARED_BYTES = 96 * 1024  # pipelined tiles must fit consumer GPUs' ~99 KiB of shared memory too


def launch_config(width: int, elem_bytes: int) -> tuple[int, int, int, int]:
    """The first of EXTREMA_CONFIGS whose pipelined q and k tiles fit in shared memory (`width` = D1 + D2)."""
    for block_m, block_n, warps, stages in EXTREMA_CONFIGS:
        if (block_m + block_n * stages) * width * elem_bytes <= _SHARED_BYTES:
            return block_m, block_n, warps, stages
    return EXTREMA_CONFIGS[-1]


if triton is not None:

    @triton.jit
    def _row_extrema_kernel(Q, K, W, MAX_OUT, MIN_OUT,
                            stride_qb, stride_qh, stride_qn,
                            stride_kb, stride_kh, stride_kn,
                            HEADS, N_QUERIES, N_KEYS, HEAD_DIM_END, scale,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr,
                            IS_FP32: tl.constexpr, HAS_W: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // HEADS
        h = pid_bh % HEADS
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < N_QUERIES
        out = pid_bh * N_QUERIES + offs_m
        n_end = N_KEYS
        if HAS_W:
            # Rows with weight 0 need no extrema (β = 0): a tile of only such rows runs no key loop.
            w = tl.load(W + offs_m, mask=m_ok, other=0.0)
            active = tl.max(tl.abs(w), 0) > 0.0
            n_end = tl.where(active, N_KEYS, 0)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d1 = tl.arange(0, D1)
        d1_ok = offs_d1 < HEAD_DIM_END
        q_base = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn
        k_base = K + b * stride_kb + h * stride_kh
        # Columns past the true head dim load as zeros, which leaves every q·k unchanged.
        q1 = tl.load(q_base + offs_d1[None, :], mask=m_ok[:, None] & d1_ok[None, :], other=0.0)
        if D2 > 0:
            offs_d2 = D1 + tl.arange(0, D2)
            d2_ok = offs_d2 < HEAD_DIM_END
            q2 = tl.load(q_base + offs_d2[None, :], mask=m_ok[:, None] & d2_ok[None, :], other=0.0)
        run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        run_min = tl.full([BLOCK_M], float("inf"), tl.float32)
        for start in range(0, n_end, BLOCK_N):
            n_idx = start + offs_n
            n_ok = n_idx < N_KEYS
            k1 = tl.load(k_base + n_idx[None, :] * stride_kn + offs_d1[:, None],
                         mask=n_ok[None, :] & d1_ok[:, None], other=0.0)
            if IS_FP32:
                s = tl.dot(q1, k1, input_precision="ieee")
            else:
                s = tl.dot(q1, k1)
            if D2 > 0:
                k2 = tl.load(k_base + n_idx[None, :] * stride_kn + offs_d2[:, None],
                             mask=n_ok[None, :] & d2_ok[:, None], other=0.0)
                if IS_FP32:
                    s += tl.dot(q2, k2, input_precision="ieee")
                else:
                    s += tl.dot(q2, k2)
            # Keys past the end (ragged last tile) must not count as extrema.
            run_max = tl.maximum(run_max, tl.max(tl.where(n_ok[None, :], s, float("-inf")), 1))
            run_min = tl.minimum(run_min, tl.min(tl.where(n_ok[None, :], s, float("inf")), 1))
        if HAS_W:
            run_max = tl.where(active, run_max, 0.0)
            run_min = tl.where(active, run_min, 0.0)
        tl.store(MAX_OUT + out, run_max * scale, mask=m_ok)
        tl.store(MIN_OUT + out, run_min * scale, mask=m_ok)


def triton_available(device: torch.device) -> bool:
    """True when the fused Triton kernel can run on `device`."""
    return triton is not None and device.type == "cuda"


def row_extrema_triton(qh: torch.Tensor, kh: torch.Tensor, scale: float, weight: torch.Tensor | None = None,
                       config: tuple[int, int, int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, min) fp32 [B, H, R] of scale·q·kᵀ with the fused Triton kernel (CUDA only).

    With `weight` [R], rows are skipped in tiles whose weights are all 0; such rows read max = min = 0.
    `config` forces one of EXTREMA_CONFIGS (benchmarks); None takes `launch_config`'s.
    """
    b, h, r, d = qh.shape
    if kh.dtype != qh.dtype:
        kh = kh.to(qh.dtype)
    # The kernel indexes the head dimension with stride 1.
    if qh.stride(-1) != 1:
        qh = qh.contiguous()
    if kh.stride(-1) != 1:
        kh = kh.contiguous()
    rmax = torch.empty(b, h, r, dtype=torch.float32, device=qh.device)
    rmin = torch.empty_like(rmax)
    d1, d2 = _split_head_dim(d)
    has_w = weight is not None
    w = weight.to(qh.device, torch.float32).contiguous() if has_w else rmax
    is_fp32 = qh.dtype == torch.float32
    block_m, block_n, warps, stages = config or launch_config(d1 + d2, 4 if is_fp32 else 2)
    _row_extrema_kernel[(triton.cdiv(r, block_m), b * h)](
        qh, kh, w, rmax, rmin, qh.stride(0), qh.stride(1), qh.stride(2), kh.stride(0), kh.stride(1), kh.stride(2),
        h, r, kh.shape[2], d, float(scale), BLOCK_M=block_m, BLOCK_N=block_n, D1=d1, D2=d2, IS_FP32=is_fp32,
        HAS_W=has_w, num_warps=warps, num_stages=stages)
    return rmax, rmin


def row_extrema(qh: torch.Tensor, kh: torch.Tensor, scale: float,
                weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, min) fp32 [B, H, R] of the scaled scores over all keys: qh [B, H, R, d], kh [B, H, Nk, d].

    With `weight` [R] the Triton path may skip tiles of rows whose weight is 0 (their max and min
    then read 0); callers only use the extrema through w·(M − m).
    """
    if qh.shape[2] == 0:
        empty = qh.new_empty(qh.shape[:3], dtype=torch.float32)
        return empty, empty.clone()
    global _triton_failure
    if (_triton_failure is None and triton_available(qh.device)
            and qh.dtype in (torch.float16, torch.bfloat16, torch.float32)):
        try:
            return row_extrema_triton(qh, kh, scale, weight)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a GPU or toolchain Triton cannot target
            _triton_failure = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"VideoGrain: Triton row-extrema kernel unavailable ({_triton_failure[:300]}); "
                          "using chunked matmuls instead", RuntimeWarning)
    return row_extrema_torch(qh, kh, scale)
