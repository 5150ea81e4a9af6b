"""One trajectory-attention call (docs/design.md §10.1) against plain space-time attention of the same q/k/v.

    python bench/trajectory_kernel.py --device cuda --frames 16 --size 512 --batch 1,2 --out traj_kernel.json
    python bench/trajectory_kernel.py --smoke          # tiny CPU run, seconds

At the 64×64 level of a 512² clip (320 channels, 8 heads × 40; `--size` is the image side, the level
is size / 8) with trajectories of the "chain" layout built from a synthetic flow (rotation + drift, as
`bench/edit_benchmark.py --trajectory synthetic`; `--flow random` gives short, colliding chains), it
times, for each batch size (CFG branches sharing the trajectories):
  spacetime       plain space-time attention (`attention/spacetime.py`), the call trajectory attention follows,
  gather          the per-slot gather route (k and v gathered [B, n, F, C] per chunk of tokens),
  grouped_sdpa    dense attention inside packed chains, SDPA on fp32 inputs (the pack's kernel),
  grouped_matmul  the same with explicit fp32 matmuls (the alternative kernel),
each the median of `--repeats` calls after warm-up (torch.cuda.synchronize around each), with the peak
extra GPU memory of one call and the largest difference from the gather route's output. Standalone: no
ComfyUI import.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch

PACK_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))
from pack_import import import_videograin  # noqa: E402
from timing import median_seconds  # noqa: E402

import_videograin()

from edit_benchmark import synthetic_flow  # noqa: E402
from videograin.attention.chain_groups import chain_plan, grouped_attention  # noqa: E402
from videograin.attention.spacetime import spacetime_attention  # noqa: E402
from videograin.attention.trajectory import CHUNK_BYTES, gather_attention  # noqa: E402
from videograin.motion.trajectories import build_trajectories  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
VARIANTS = ("spacetime", "gather", "grouped_sdpa", "grouped_matmul")


def measure(fn, device: torch.device, repeats: int) -> tuple[float, float, torch.Tensor]:
    """(median ms, peak extra MiB of one call or NaN on the CPU, the output) after one warm-up call."""
    ms = 1000 * median_seconds(fn, device, repeats)
    peak = float("nan")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    if cuda:
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20
    return ms, peak, out


def trajectories(flow_kind: str, frames: int, size: int):
    side = size // 8
    if flow_kind == "synthetic":
        flow = synthetic_flow(frames, size, size)
    else:  # white noise of ±10 px: many collisions and exits, short chains
        flow = torch.randn(frames - 1, size, size, 2, generator=torch.Generator().manual_seed(0)) * 10
    t0 = time.perf_counter()
    traj = build_trajectories(flow, (size, size), [(side, side)], seed=0, layout="chain")[(side, side)]
    return traj, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512, help="square image side in pixels; the level is size / 8")
    p.add_argument("--channels", type=int, default=320)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--batch", default="1,2", help="CFG branches per call, comma-separated")
    p.add_argument("--dtype", default="fp16", choices=DTYPES)
    p.add_argument("--flow", default="synthetic", choices=("synthetic", "random"))
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (4 frames, 16x16 level)")
    p.add_argument("--out", type=pathlib.Path)
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.frames, a.size, a.channels, a.heads, a.repeats = "cpu", 4, 128, 64, 4, 2
    device, dtype = torch.device(a.device), DTYPES[a.dtype]
    variants = list(dict.fromkeys(v for v in a.variants.split(",") if v))
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}")
    torch.set_grad_enabled(False)
    traj, build_s = trajectories(a.flow, a.frames, a.size)
    t0 = time.perf_counter()
    plan = chain_plan(traj, device)
    plan_s = time.perf_counter() - t0
    assert plan is not None, "a chain-layout Trajectories must give a grouped plan"
    chains = int(traj.chain.max()) + 1
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {a.device} ({name}), torch {torch.__version__}, {a.dtype}, {a.frames} frames, level "
          f"{traj.size[0]}x{traj.size[1]}, {a.heads} heads x {a.channels // a.heads}, {a.flow} flow: "
          f"{chains} chains, longest {plan.cap}, {plan.bins} bins, fill {plan.fill:.3f}; trajectories "
          f"{build_s * 1000:.0f} ms, plan {plan_s * 1000:.0f} ms (once per Trajectories and device)", flush=True)
    kernels = {
        "spacetime": lambda q, k, v: spacetime_attention(q, k, v, a.heads),
        "gather": lambda q, k, v: gather_attention(q, k, v, a.heads, traj, CHUNK_BYTES),
        "grouped_sdpa": lambda q, k, v: grouped_attention(q, k, v, a.heads, plan, CHUNK_BYTES, "sdpa"),
        "grouped_matmul": lambda q, k, v: grouped_attention(q, k, v, a.heads, plan, CHUNK_BYTES, "matmul"),
    }
    rows = []
    for batch in (int(b) for b in a.batch.split(",")):
        g = torch.Generator(device=device).manual_seed(batch)
        q, k, v = (torch.randn(batch, traj.tokens, a.channels, generator=g, device=device).to(dtype)
                   for _ in range(3))
        row = {"batch": batch, "tokens": traj.tokens, "frames": a.frames, "level": list(traj.size),
               "channels": a.channels, "heads": a.heads, "dtype": a.dtype, "device": name, "flow": a.flow,
               "chains": chains, "bins": plan.bins, "fill": plan.fill, "plan_ms": plan_s * 1000}
        reference = None
        for variant in variants:
            ms, peak, out = measure(lambda: kernels[variant](q, k, v), device, a.repeats)
            cell = {"ms": ms, "peak_mib": peak}
            if variant == "gather":
                reference = out.float()
            elif variant.startswith("grouped") and reference is not None:
                cell["max_abs_diff_vs_gather"] = float((out.float() - reference).abs().max())
            row[variant] = cell
            del out
        rows.append(row)
    print_table(rows, variants)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


def print_table(rows: list[dict], variants: list[str]) -> None:
    base = "spacetime" if "spacetime" in variants else None
    head = " | ".join(f"{v} ms / MiB" for v in variants)
    ratios = [v for v in variants if v != "spacetime" and base]
    extra = "".join(f" | {v}/spacetime" for v in ratios)
    diffs = [v for v in variants if v.startswith("grouped") and "gather" in variants]
    print(f"\n| B | tokens | {head}{extra}" + "".join(f" | max|{v}-gather|" for v in diffs) + " |")
    print("|---" * (2 + len(variants) + len(ratios) + len(diffs)) + "|")
    for r in rows:
        cells = [f"{r[v]['ms']:.3f} / {r[v]['peak_mib']:.0f}" for v in variants]
        cells += [f"{r[v]['ms'] / r[base]['ms']:.3f}" for v in ratios]
        cells += [f"{r[v]['max_abs_diff_vs_gather']:.2e}" for v in diffs]
        print(f"| {r['batch']} | {r['tokens']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
