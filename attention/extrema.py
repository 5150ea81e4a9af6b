"""Exact row max and min of the attention scores without keeping a score matrix (spec §11, step 1).

M_q and m_q are the only quantities of ST-Layout Attn that need every key of a row at once. On CUDA
a Triton kernel streams key tiles through one GEMM per tile and keeps a running max/min in registers
(memory O(tile²), cost about one QKᵀ, no HBM traffic for scores); elsewhere a query-chunked
matmul + amax/amin does the same with bounded memory.
"""
from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs run the torch path.
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001 - any import failure just means "no Triton"
    triton = None

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


if triton is not None:

    @triton.autotune(
        configs=[
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 64}, num_warps=8, num_stages=3),
            triton.Config({"BLOCK_M": 128, "BLOCK_N": 128}, num_warps=8, num_stages=3),
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 128}, num_warps=4, num_stages=3),
            triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=4),
        ],
        key=["N_KEYS", "BLOCK_D", "IS_FP32"],
    )
    @triton.jit
    def _row_extrema_kernel(Q, K, MAX_OUT, MIN_OUT,
                            stride_qb, stride_qh, stride_qn,
                            stride_kb, stride_kh, stride_kn,
                            HEADS, N_QUERIES, N_KEYS, HEAD_DIM, scale,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            IS_FP32: tl.constexpr):
        pid_m = tl.program_id(0)
        pid_bh = tl.program_id(1)
        b = pid_bh // HEADS
        h = pid_bh % HEADS
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_n = tl.arange(0, BLOCK_N)
        d_ok = offs_d < HEAD_DIM
        # Padded head columns load as zeros, which leaves every dot product unchanged.
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :],
                    mask=(offs_m[:, None] < N_QUERIES) & d_ok[None, :], other=0.0)
        k_base = K + b * stride_kb + h * stride_kh
        run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
        run_min = tl.full([BLOCK_M], float("inf"), tl.float32)
        full_tiles = (N_KEYS // BLOCK_N) * BLOCK_N
        for start in range(0, full_tiles, BLOCK_N):
            kt = tl.load(k_base + (start + offs_n)[None, :] * stride_kn + offs_d[:, None],
                         mask=d_ok[:, None], other=0.0)
            if IS_FP32:
                s = tl.dot(q, kt, input_precision="ieee")
            else:
                s = tl.dot(q, kt)
            run_max = tl.maximum(run_max, tl.max(s, 1))
            run_min = tl.minimum(run_min, tl.min(s, 1))
        if full_tiles < N_KEYS:  # ragged last tile: padded keys must not count as extrema
            n_ok = (full_tiles + offs_n) < N_KEYS
            kt = tl.load(k_base + (full_tiles + offs_n)[None, :] * stride_kn + offs_d[:, None],
                         mask=d_ok[:, None] & n_ok[None, :], other=0.0)
            if IS_FP32:
                s = tl.dot(q, kt, input_precision="ieee")
            else:
                s = tl.dot(q, kt)
            run_max = tl.maximum(run_max, tl.max(tl.where(n_ok[None, :], s, float("-inf")), 1))
            run_min = tl.minimum(run_min, tl.min(tl.where(n_ok[None, :], s, float("inf")), 1))
        out = pid_bh * N_QUERIES + offs_m
        m_ok = offs_m < N_QUERIES
        tl.store(MAX_OUT + out, run_max * scale, mask=m_ok)
        tl.store(MIN_OUT + out, run_min * scale, mask=m_ok)


def triton_available(device: torch.device) -> bool:
    """True when the fused Triton kernel can run on `device`."""
    return triton is not None and device.type == "cuda"


def row_extrema_triton(qh: torch.Tensor, kh: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, min) fp32 [B, H, R] of scale·q·kᵀ with the fused Triton kernel (CUDA only)."""
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
    block_d = max(16, triton.next_power_of_2(d))
    grid = lambda meta: (triton.cdiv(r, meta["BLOCK_M"]), b * h)  # noqa: E731
    _row_extrema_kernel[grid](qh, kh, rmax, rmin,
                              qh.stride(0), qh.stride(1), qh.stride(2),
                              kh.stride(0), kh.stride(1), kh.stride(2),
                              h, r, kh.shape[2], d, float(scale),
                              BLOCK_D=block_d, IS_FP32=qh.dtype == torch.float32)
    return rmax, rmin


def row_extrema(qh: torch.Tensor, kh: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, min) fp32 [B, H, R] of the scaled scores over all keys: qh [B, H, R, d], kh [B, H, Nk, d]."""
    if qh.shape[2] == 0:
        empty = qh.new_empty(qh.shape[:3], dtype=torch.float32)
        return empty, empty.clone()
    if triton_available(qh.device) and qh.dtype in (torch.float16, torch.bfloat16, torch.float32):
        return row_extrema_triton(qh, kh, scale)
    return row_extrema_torch(qh, kh, scale)
