"""Cost of VideoGrainAutoRegions' recording on one inversion UNet call (docs/design.md §18).

    python bench/auto_regions_overhead.py --comfy .host/ComfyUI --frames 8,16,32 --size 512
    python bench/auto_regions_overhead.py --smoke     # tiny model on the CPU, seconds; numbers mean nothing

Times one UNet call of the inversion (guidance 1: the cond branch only, all F frames) on ComfyUI's
model code with a random-weight full-size SD1.5 built in memory: `spacetime_clone` (what
VideoGrainInvert runs) against `recording_clone` (the same plus FrameBlockRecordingAttention at the
five latent/2 blocks), and reports the ratio, the largest output difference and the recorder's memory.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))
import edit_benchmark as eb  # noqa: E402  (import_comfy, build_checkpoint)
from timing import median_seconds  # noqa: E402


def unet_call(patcher, x, sigma, context, repeats: int, device):
    """(median seconds of one UNet call over `repeats` calls after a warm-up call, the last output)."""
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    options = dict(patcher.model_options["transformer_options"])
    options.update({"cond_or_uncond": [0]})

    last = []

    def call():  # keeps the last output: no extra call (the recorder counts the calls)
        last[:] = [patcher.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)]
    return median_seconds(call, device, repeats), last[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", type=Path, default=PACK_DIR / ".host" / "ComfyUI")
    ap.add_argument("--frames", default="8,16,32")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import torch

    cpu = args.smoke or not torch.cuda.is_available()
    eb.import_comfy(args.comfy, cpu)
    if args.smoke:
        args.frames, args.size, args.repeats = "2", 128, 1
    eb.import_pack()
    auto = importlib.import_module("videograin.nodes.auto_region_nodes")
    patch = importlib.import_module("videograin.nodes.model_patch")
    model, clip, _ = eb.build_checkpoint(args.smoke)
    import comfy.model_management as mm

    device = mm.get_torch_device()
    cond = eb.encode_text(clip, "two people walking")[0][0]
    rows = []
    for frames in [int(f) for f in args.frames.split(",")]:
        lat = args.size // 8
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(frames, 4, lat, lat, generator=gen).to(device)
        sigma = torch.full((frames,), 1.0, device=device)
        context = cond.to(device).repeat(frames, 1, 1)
        plain_s, plain_out = unet_call(patch.spacetime_clone(model), x, sigma, context, args.repeats, device)
        work, rec = auto.recording_clone(model)
        rec_s, rec_out = unet_call(work, x, sigma, context, args.repeats, device)
        acc = rec.accumulator
        row = {"frames": frames, "size": args.size, "plain_ms": 1000 * plain_s, "recording_ms": 1000 * rec_s,
               "ratio": rec_s / plain_s, "max_abs_diff": float((rec_out.float() - plain_out.float()).abs().max()),
               "recorder_mib": acc.sum.numel() * 4 / 2 ** 20, "grid": [acc.h, acc.w], "fused": acc.fused,
               "calls": acc.calls}
        print(json.dumps(row))
        rows.append(row)
        del work, rec
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
