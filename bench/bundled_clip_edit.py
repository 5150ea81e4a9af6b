"""The bundled clip's instance edit with the official components switched on one at a time (issue 8).

The clip (`workflows/assets/videograin_demo/clip.mp4`, 16 frames, 512×320) and its masks (left figure,
right figure, background) go through the pack's nodes as `workflows/videograin_instance_edit.json` wires
them: VideoGrainLayout → VideoGrainInvert → VideoGrainApplySTLayout → VideoGrainSampler, VAE in chunks.
Variants, each a whole edit (encode, 49-step inversion, 50-step edit, decode) in one process:

- `base`: ST-Layout only;
- `traj`: + trajectory attention at 64×64 (VideoGrainOpticalFlow DIS + VideoGrainTrajectoryAttention);
- `pnp`: + PnP injection (VideoGrainPnP, inject_step `--inject-step`).

For each: time, peak GPU memory, host RSS, and the weight-free Warp-Err of the decoded edit along the
source clip's OpenCV flow (`motion/warp_error.py`). With random weights Warp-Err compares the variants'
temporal behaviour only; it says nothing about quality and is not comparable to the paper's 1.42.

    python bench/bundled_clip_edit.py --comfy .device/ComfyUI --out results/h200_bundled_clip.json
    python bench/bundled_clip_edit.py --smoke      # tiny model, CPU, 4 frames, 3 steps
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
DEMO = PACK_DIR / "workflows" / "assets" / "videograin_demo"
PROMPTS = [("left_figure", "astronaut"), ("right_figure", "knight"), ("background", "cherry blossoms")]


def load_case(eb, pack, model, clip, vae, frames: int, scale: int):
    """An edit_benchmark Case built from the bundled clip and its masks instead of noise."""
    import numpy as np
    import torch
    from PIL import Image

    from videograin.media.decode import iter_source_frames

    case = eb.Case(pack, model, clip, vae, frames, 64, 64, len(PROMPTS))
    rgb = [f.rgb() for f, _ in zip(iter_source_frames(str(DEMO / "clip.mp4")), range(frames))]
    images = torch.from_numpy(np.stack(rgb)).float() / 255.0                            # [F, H, W, 3]
    masks = []
    for name, _ in PROMPTS:
        files = sorted((DEMO / "masks" / name).glob("*.png"))[:frames]
        masks.append(torch.stack([torch.from_numpy(np.array(Image.open(f).convert("L"))).float() / 255.0
                                  for f in files]))
    if scale > 1:  # --smoke: a smaller clip for the CPU
        images = torch.nn.functional.interpolate(images.movedim(-1, 1), scale_factor=1 / scale, mode="area").movedim(1, -1)
        masks = [torch.nn.functional.interpolate(m[:, None], scale_factor=1 / scale, mode="nearest")[:, 0] for m in masks]
    case.images = images
    case.masks = masks
    case.local = [p for _, p in PROMPTS]
    case.global_prompt = "an astronaut and a knight walking under cherry blossoms"
    case.source = eb.encode_text(clip, "two people walking in a park")
    return case


def variant_model(eb, pack, case, name: str, inject_step: int):
    """The model fed to both the inversion and the ST-Layout node for one variant."""
    if name == "base":
        return case.model
    if name == "pnp":
        from videograin.nodes.pnp_nodes import VideoGrainPnP

        return eb.call(VideoGrainPnP, model=case.model, inject_step=inject_step, negative=case.negative)[0]
    flow = eb.call(pack.motion_nodes.VideoGrainOpticalFlow, images=case.images, method="dis", dis_preset="medium")[0]
    return eb.call(pack.motion_nodes.VideoGrainTrajectoryAttention, model=case.model, flow=flow, resolutions="64",
                   seed=0, slot_layout="chain")[0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfy", type=Path, default=PACK_DIR / ".host" / "ComfyUI")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--variants", default="base,traj,pnp")
    ap.add_argument("--inject-step", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(PACK_DIR / "bench"))
    import edit_benchmark as eb
    import torch

    cpu = args.smoke or not torch.cuda.is_available()
    if args.smoke:
        args.steps, args.frames, args.inject_step = 3, 4, 1
    eb.import_comfy(args.comfy, cpu)
    pack = eb.import_pack()
    from videograin.motion.warp_error import source_flows, warp_error

    device = torch.device("cpu" if cpu else "cuda")
    model, clip, vae = eb.build_checkpoint(tiny=args.smoke, checkpoint=args.checkpoint)
    case = load_case(eb, pack, model, clip, vae, args.frames, 4 if args.smoke else 1)
    forward, backward = source_flows(case.images)
    rows = {}
    for name in args.variants.split(","):
        base = variant_model(eb, pack, case, name, args.inject_step)
        cell, inversion = eb.whole_edit(pack, case, args.steps, True, device, base=base)  # inversion uncached
        cell["warp_error"] = float(warp_error(case.decoded.float().cpu(), forward, backward).value)
        cell["host_rss_gib"] = eb.host_rss_gib()
        if inversion.pnp is not None:
            cell["pnp_feature_bytes"] = inversion.pnp.nbytes
        rows[name] = cell
        print(json.dumps({name: cell}), flush=True)
    base_s = rows.get("base", {}).get("seconds")
    print("\n| variant | whole edit | peak GPU | host RSS | /base | Warp-Err (random weights) |")
    print("|---|---|---|---|---|---|")
    for name, c in rows.items():
        ratio = f"{c['seconds'] / base_s:.2f}" if base_s else "—"
        print(f"| {name} | {c['seconds']:.1f} s | {c['peak_gib']:.2f} GiB | {c['host_rss_gib']:.1f} GiB | {ratio} | "
              f"{c['warp_error']:.4f} |")
    if args.out:
        args.out.write_text(json.dumps({"frames": args.frames, "steps": args.steps, "inject_step": args.inject_step,
                                        "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
