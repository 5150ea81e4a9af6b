"""Where the first edit's extra time goes: one-time kernel costs of the modulated self-attention.

For the three modulated levels of a 16-frame 512² edit (32×32, 16×16, 8×8 tokens per frame; SD1.5 head
dims 80, 160, 160; one CFG branch, fp16) a child process times, per level: the first and a warm call of
the Triton row-extrema kernel, of the FlexAttention route (compile) and of the region-grouped route,
beside the unmodulated floor (plain SDPA). The child runs twice on the same, initially empty, compile
caches (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR): "fresh" is a new machine, "restart" a ComfyUI
restart with the caches on disk.

With `--edits 16,12,16,12` it also times whole edits (VAE encode, 50-step inversion, 50-step edit with 3
regions, VAE decode; the pack's nodes, `edit_benchmark.whole_edit`) in that order in one process on fresh
caches (first edit, a new clip size, then the same sizes warm), then `--restart-edits` in a second
process on the caches the first left (a ComfyUI restart). Every edit computes its inversion (no disk cache).

    python bench/compile_stall.py --comfy .device/ComfyUI --sweep --edits 16,12,16,12 --restart-edits 16,16 \
        --checkpoint /tmp/ckpt/videograin_random_sd15.safetensors --out results/h200_compile_stall.json
    python bench/compile_stall.py --smoke          # CPU, toy sizes (CI): grouped and floor only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))
from timing import median_seconds  # noqa: E402
LEVELS = [("32x32", 1024, 80), ("16x16", 256, 160), ("8x8", 64, 160)]  # tokens per frame, head dim


def _first_or_median(fn, device, repeats: int = 1) -> float:
    # no warm-up run: with repeats 1 this is the call's first time (compiles, autotuning), later calls of
    # the same fn come after that first one and so are warm
    return median_seconds(fn, device, repeats, warmup=False)


def _run_child(argv: list[str], env: dict) -> tuple[object, int]:
    """Run this script with `--child` + argv in a fresh process: (its last stdout line as JSON, 0), or
    (None, the return code) after printing the tail of its stderr."""
    proc = subprocess.run([sys.executable, __file__, "--child"] + argv, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr[-4000:], file=sys.stderr)
        return None, proc.returncode
    return json.loads(proc.stdout.strip().splitlines()[-1]), 0


def child(frames: int, smoke: bool, sweep: bool = False) -> dict:
    from pack_import import import_videograin

    import_videograin()
    import torch

    from videograin.attention import extrema, fast
    from videograin.attention.spacetime import spacetime_attention

    device = torch.device("cpu" if smoke else "cuda")
    dtype = torch.float32 if smoke else torch.float16
    heads = 2 if smoke else 8
    rows = {}
    for name, cells, d in LEVELS:
        n = frames * (16 if smoke else cells)
        d = 8 if smoke else d
        g = torch.Generator(device="cpu").manual_seed(0)
        q, k, v = (torch.randn(1, n, heads * d, generator=g).to(device, dtype) for _ in range(3))
        bits = (torch.arange(n) * 3 // n + 1).clamp(max=3)
        bits = torch.where(torch.arange(n) % 7 == 0, 0, 1 << (bits - 1)).to(device)
        w = torch.full((n,), 0.2, device=device)
        row = {"tokens": n, "head_dim": d}
        qh, kh = fast.split_heads(q, heads), fast.split_heads(k, heads)
        scale = d ** -0.5
        if not smoke:
            row["extrema_first"] = _first_or_median(lambda: extrema.row_extrema(qh, kh, scale, w), device)
            row["extrema_warm"] = _first_or_median(lambda: extrema.row_extrema(qh, kh, scale, w), device, 5)
            row["flex_first"] = _first_or_median(lambda: fast.modulated_attention(q, k, v, heads, bits, bits, w, "flex"), device)
            row["flex_warm"] = _first_or_median(lambda: fast.modulated_attention(q, k, v, heads, bits, bits, w, "flex"), device, 5)
        if sweep and not smoke:
            row["extrema_sweep"] = {str(c): _first_or_median(lambda c=c: extrema.row_extrema_triton(qh, kh, scale, w, c), device, 5)
                                    for c in extrema.EXTREMA_CONFIGS}
            row["extrema_rule"] = str(extrema.launch_config(sum(extrema._split_head_dim(d)), 2))
        row["grouped_first"] = _first_or_median(lambda: fast.modulated_attention(q, k, v, heads, bits, bits, w, "grouped"), device)
        row["grouped_warm"] = _first_or_median(lambda: fast.modulated_attention(q, k, v, heads, bits, bits, w, "grouped"),
                                    device, 5)
        row["floor_warm"] = _first_or_median(lambda: spacetime_attention(q, k, v, heads), device, 5)
        rows[name] = row
    return rows


def edit_child(comfy: Path, sequence: list[int], smoke: bool, checkpoint: Path | None, steps: int, route: str) -> list:
    """Whole edits of 512² clips of the given frame counts, in order, in this process."""
    import edit_benchmark as eb
    import torch

    eb.import_comfy(comfy, smoke)
    pack = eb.import_pack()
    from videograin.attention import fast

    fast.CUDA_ROUTE = route
    device = torch.device("cpu" if smoke else "cuda")
    t = time.perf_counter()
    model, clip, vae = eb.build_checkpoint(tiny=smoke, checkpoint=checkpoint)
    rows = [{"load_seconds": time.perf_counter() - t}]
    size = (128, 64) if smoke else (512, 512)
    for frames in sequence:
        case = eb.Case(pack, model, clip, vae, frames, size[0], size[1], 3)
        cell, _ = eb.whole_edit(pack, case, steps, True, device)  # the inversion bypasses the disk cache
        rows.append({"frames": frames, **cell})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--sweep", action="store_true", help="also time every Triton row-extrema tile config")
    ap.add_argument("--edits", default="", help="frame counts of whole edits in the fresh process, in order")
    ap.add_argument("--restart-edits", default="", help="frame counts of whole edits after the restart")
    ap.add_argument("--flex-edits", default="", help="whole edits in a third process with CUDA_ROUTE = flex (the old "
                    "default, compiled per shape), for the warm comparison")
    ap.add_argument("--route", default="grouped", choices=("grouped", "flex"), help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--comfy", type=Path, default=PACK_DIR / ".host" / "ComfyUI")
    ap.add_argument("--child", choices=("kernels", "edits"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.steps = 3
    if args.child == "kernels":
        print(json.dumps(child(args.frames, args.smoke, args.sweep)))
        return 0
    if args.child == "edits":
        seq = [int(f) for f in args.edits.split(",") if f]
        print(json.dumps(edit_child(args.comfy, seq, args.smoke, args.checkpoint, args.steps, args.route)))
        return 0
    runs = {}
    with tempfile.TemporaryDirectory() as caches:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(Path(caches) / "inductor"),
                   TRITON_CACHE_DIR=str(Path(caches) / "triton"))
        common = ["--frames", str(args.frames), "--steps", str(args.steps), "--comfy", str(args.comfy)] \
            + (["--smoke"] if args.smoke else []) + (["--sweep"] if args.sweep else []) \
            + (["--checkpoint", str(args.checkpoint)] if args.checkpoint else [])
        plan = [("fresh", args.edits, "grouped"), ("restart", args.restart_edits, "grouped")]
        if args.flex_edits:
            plan.append(("flex", args.flex_edits, "flex"))
        for label, edits, route in plan:
            runs[label] = {"levels": {}}
            if label != "flex":
                t = time.perf_counter()
                levels, rc = _run_child(["kernels"] + common, env)
                if rc:
                    return rc
                runs[label] = {"process_seconds": time.perf_counter() - t, "levels": levels}
            common_route = common + ["--route", route]
            if edits:  # a separate process on the same caches: its first edit is that run's first
                runs[label]["edits"], rc = _run_child(["edits", "--edits", edits] + common_route, env)
                if rc:
                    return rc
    cols = ["extrema_first", "extrema_warm", "flex_first", "flex_warm", "grouped_first", "grouped_warm", "floor_warm"]
    print("| run | level | tokens | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 3))
    for label, run in runs.items():
        for name, row in run["levels"].items():
            cells = [f"{1000 * row[c]:.1f} ms" if c in row else "—" for c in cols]
            print(f"| {label} | {name} | {row['tokens']} | " + " | ".join(cells) + " |")
    for label, run in runs.items():
        for name, row in run["levels"].items():
            if "extrema_sweep" in row:
                best = min(row["extrema_sweep"], key=row["extrema_sweep"].get)
                print(f"{label} {name}: extrema rule {row['extrema_rule']} "
                      f"{1000 * row['extrema_sweep'][row['extrema_rule']]:.2f} ms, best {best} "
                      f"{1000 * row['extrema_sweep'][best]:.2f} ms")
    if any("edits" in run for run in runs.values()):
        print("\n| process | edit | frames | whole edit | peak |\n|---|---|---|---|---|")
        for label, run in runs.items():
            for i, row in enumerate(run.get("edits", [])[1:]):
                print(f"| {label} | {i + 1} | {row['frames']} | {row['seconds']:.1f} s | {row['peak_gib']:.2f} GiB |")
    if args.out:
        args.out.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
