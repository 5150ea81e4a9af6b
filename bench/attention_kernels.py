"""Per-call timing and memory of ST-Layout Attn: plain space-time attention (the floor), the dense
reference and the fast exact path, at each modulated SD1.5 level (docs/design.md §6, §11).

    python bench/attention_kernels.py --device cuda --frames 16 --size 512 --dtype fp16
    python bench/attention_kernels.py --smoke          # tiny CPU run, seconds

Self-attention rows attend over all F·h·w tokens of one CFG branch (B = 1, 8 heads); cross rows
(--cross) attend to 77 text keys. The layout has three regions, one of them a part inside another,
and the weights are docs/design.md's at the first editing step (t = 981). An out-of-memory of the
reference is reported as OOM. Standalone: no ComfyUI import.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys

import torch

PACK_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))
from pack_import import import_videograin  # noqa: E402
from timing import median_seconds  # noqa: E402

import_videograin()

from videograin.attention import extrema as extrema_module  # noqa: E402
from videograin.attention import fast as fast_module  # noqa: E402
from videograin.attention.fast import choose_route, modulated_attention  # noqa: E402
from videograin.attention.reference import modulated_attention_reference  # noqa: E402
from videograin.attention.spacetime import spacetime_attention  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
HEADS = 8
TEXT_TOKENS = 77
# Modulated levels of SD1.5 at 512²: (downsampling of the 64² latent, channels); head dim = channels / 8.
LEVELS = ((2, 640), (4, 1280), (8, 1280))
TAU_FIRST_STEP = ((981 - 1) / 1000) ** 5  # τ(t) at the first editing step (docs/design.md §3)


def parse_size(text: str) -> tuple[int, int]:
    """'512' or 'WxH' -> (width, height) in pixels."""
    parts = text.lower().split("x")
    width, height = (int(parts[0]), int(parts[-1]))
    if width % 8 or height % 8:
        raise argparse.ArgumentTypeError(f"size {text} must be a multiple of 8")
    return width, height


def level_grid(width: int, height: int, down: int) -> tuple[int, int]:
    """(h, w) token grid of a UNet level: the latent (pixels / 8) halved with ceiling `log2(down)` times."""
    h, w = height // 8, width // 8
    for _ in range(int(math.log2(down))):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def region_masks(frames: int, h: int, w: int) -> torch.Tensor:
    """bool [3, F, h, w]: a left box, a right box, and a part inside the right box, drifting with time."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    masks = torch.zeros(3, frames, h, w, dtype=torch.bool)
    for f in range(frames):
        shift = (f * max(1, w // 8)) // max(1, frames)
        masks[0, f] = (xs >= shift) & (xs < shift + max(1, w // 3)) & (ys >= h // 4) & (ys < h - h // 8)
        masks[1, f] = (xs >= w // 2) & (xs < w - max(1, w // 10)) & (ys >= h // 8) & (ys < h - h // 4)
        masks[2, f] = masks[1, f] & (ys < h // 8 + max(1, h // 4))
    return masks


def self_layout(frames: int, h: int, w: int, strength: float = 0.3):
    """(bits [N], weight [N]) of a self-attention call: docs/design.md §5.3 area term with its F² denominator."""
    masks = region_masks(frames, h, w).flatten(1)                      # [3, N]
    bits = (masks.long() << torch.arange(3)[:, None]).sum(0)
    counts = masks.sum(1).float()                                      # tokens per region, all frames
    area = 1.0 - (masks.float() * counts[:, None]).sum(0) / (frames * frames * h * w)
    return bits, strength * TAU_FIRST_STEP * area


def cross_layout(frames: int, h: int, w: int, strength: float = 1.0):
    """(query bits [N], key bits [77], weight [N]) of a cross-attention call: docs/design.md §5.2."""
    masks = region_masks(frames, h, w)                                  # [3, F, h, w]
    q_bits = (masks.flatten(1).long() << torch.arange(3)[:, None]).sum(0)
    k_bits = torch.zeros(TEXT_TOKENS, dtype=torch.long)
    for r in range(3):
        k_bits[2 + 3 * r: 4 + 3 * r] = 1 << r                           # two words per region prompt
    sizes = masks.flatten(2).sum(2).float()                             # [3, F] per-frame region size
    area = 1.0 - (masks.float() * sizes[:, :, None, None]).sum(0) / (h * w)
    return q_bits, k_bits, strength * TAU_FIRST_STEP * area.flatten()


def measure(fn, device: torch.device, repeats: int):
    """(median seconds, peak bytes or None, result) of fn() after one warm-up call."""
    result = fn()  # warm-up: compilation, autotuning, allocator growth; its result is the one returned
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = median_seconds(fn, device, repeats, warmup=False)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return seconds, peak, result


def is_oom(exc: BaseException) -> bool:
    """True for CUDA or host out-of-memory errors."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower() or \
        isinstance(exc, MemoryError)


def bench_call(kind: str, level: str, q, k, v, q_bits, k_bits, weight, device, repeats: int, reference: bool):
    """One table row as a dict."""
    row = {"level": level, "kind": kind, "N": q.shape[1], "Nk": k.shape[1], "d": q.shape[2] // HEADS,
           "route": choose_route(q, k)}
    row["floor_s"], row["floor_peak"], _ = measure(lambda: spacetime_attention(q, k, v, HEADS), device, repeats)
    row["fast_s"], row["fast_peak"], fast = measure(
        lambda: modulated_attention(q, k, v, HEADS, q_bits, k_bits, weight), device, repeats)
    row["ref_s"] = row["ref_peak"] = row["err"] = None
    row["ref_note"] = "skipped"
    if reference:
        try:
            row["ref_s"], row["ref_peak"], ref = measure(
                lambda: modulated_attention_reference(q, k, v, HEADS, q_bits, k_bits, weight), device, 1)
            row["err"] = (fast.float() - ref.float()).abs().max().item()
            row["ref_note"] = ""
            del ref
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            row["ref_note"] = "OOM"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def format_table(rows: list[dict], device_name: str, args) -> str:
    """The results as a fixed-width text table (also valid Markdown)."""
    mib = lambda b: "-" if b is None else f"{b / 2**20:.0f}"  # noqa: E731
    ms = lambda s: f"{s * 1e3:.2f}"  # noqa: E731
    head = ["level", "attn", "N", "Nk", "d", "route", "floor ms", "ref ms", "fast ms", "fast/floor",
            "ref/fast", "floor MiB", "ref MiB", "fast MiB", "max|fast-ref|"]
    lines = [f"device: {device_name}  frames: {args.frames}  size: {args.size[0]}x{args.size[1]}  "
             f"dtype: {args.dtype}  heads: {HEADS}  torch: {torch.__version__}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ref_ms = ms(r["ref_s"]) if r["ref_s"] is not None else r["ref_note"]
        ratio = f"{r['ref_s'] / r['fast_s']:.2f}" if r["ref_s"] is not None else r["ref_note"]
        cells = [r["level"], r["kind"], str(r["N"]), str(r["Nk"]), str(r["d"]), r["route"], ms(r["floor_s"]),
                 ref_ms, ms(r["fast_s"]), f"{r['fast_s'] / r['floor_s']:.2f}", ratio, mib(r["floor_peak"]),
                 mib(r["ref_peak"]) if r["ref_s"] is not None else r["ref_note"], mib(r["fast_peak"]),
                 "-" if r["err"] is None else f"{r['err']:.2e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--size", type=parse_size, default=(512, 512), help="pixels: 512 or WxH (default 512)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="activation dtype (default fp16 on cuda, fp32 on cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
    parser.add_argument("--cross", action="store_true", help="also time cross-attention (77 keys)")
    parser.add_argument("--no-reference", action="store_true", help="skip the dense reference")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run: 2 frames, 128x128, 1 repeat, cross on")
    args = parser.parse_args(argv)
    if args.smoke:
        args.device = args.device or "cpu"
        args.frames, args.size, args.repeats, args.cross = 2, (128, 128), 1, True
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.dtype = args.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = DTYPES[args.dtype]
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    generator = torch.Generator().manual_seed(0)
    rows = []
    for down, channels in LEVELS:
        h, w = level_grid(*args.size, down)
        level = f"{h}x{w}"
        n = args.frames * h * w
        rand = lambda *shape: torch.randn(*shape, generator=generator).to(device, dtype)  # noqa: E731
        q, k, v = rand(1, n, channels), rand(1, n, channels), rand(1, n, channels)
        bits, weight = self_layout(args.frames, h, w)
        rows.append(bench_call("self", level, q, k, v, bits.to(device), bits.to(device), weight.to(device),
                               device, args.repeats, not args.no_reference))
        del q, k, v
        if args.cross:
            q = rand(1, n, channels)
            k, v = rand(1, TEXT_TOKENS, channels), rand(1, TEXT_TOKENS, channels)
            q_bits, k_bits, weight = cross_layout(args.frames, h, w)
            rows.append(bench_call("cross", level, q, k, v, q_bits.to(device), k_bits.to(device),
                                   weight.to(device), device, args.repeats, not args.no_reference))
            del q, k, v
        print(f"done {level}", file=sys.stderr, flush=True)
    print(format_table(rows, device_name, args), flush=True)
    failures = {**{f"flex {k}": v for k, v in fast_module._flex_failures.items()},
                **({"triton extrema": extrema_module._triton_failure} if extrema_module._triton_failure else {})}
    for name, reason in failures.items():  # variants that did not compile here (fallbacks were used)
        print(f"note: {name} unavailable: {reason[:200]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
