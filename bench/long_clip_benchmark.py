"""Long clips: whole edits with full space-time attention and with temporal windows (docs/design.md §16).

    python bench/long_clip_benchmark.py --comfy .host/ComfyUI --frames 16,64,128 --full-max 64 \\
        --window 16,4,2 --steps 10 --out long.json

For each frame count it times the whole edit (VAE encode, inversion, edit, VAE decode; the pack's real
nodes, as `edit_benchmark.py` runs them) with full attention (up to `--full-max` frames) and with
VideoGrainTemporalWindows, on the bundled synthetic clip's generator at that length (two walking
figures as the two regions), and prints beside the times the seam figures of the decoded edit:

- warp error: `motion.warp_error` of the edit along the source clip's own optical flow (lower = steadier);
- seam flicker: the mean absolute frame-to-frame change of the edit minus the source's, at the frames
  where a new window starts and elsewhere;
- colour drift: the spread over frames of the edit's mean colour minus the source's.

With random weights these figures only compare full and windowed attention with each other.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / ".ci"))

import edit_benchmark as eb  # noqa: E402  (this folder)


def clip_case(pack, model, clip, vae, frames: int, width: int, height: int):
    """An edit_benchmark Case on the synthetic clip: its two figures are the regions."""
    import synthetic_clip
    import torch

    rendered = synthetic_clip.render_clip(frames)  # drawn at its own 512x320, then resized
    resize = lambda x, mode: torch.nn.functional.interpolate(x, size=(height, width), mode=mode)  # noqa: E731
    case = eb.Case(pack, model, clip, vae, frames, width, height, 2)
    pixels = torch.from_numpy(rendered.frames).float().div(255.0).movedim(-1, 1)
    case.images = resize(pixels, "bilinear").clamp(0, 1).movedim(1, -1).contiguous()
    case.masks = [resize(torch.from_numpy(rendered.masks[name]).float()[:, None], "nearest")[:, 0]
                  for name in ("left_figure", "right_figure")]
    case.local = ["astronaut", "knight"]
    case.global_prompt = "an astronaut and a knight walking in a park"
    return case


def seam_figures(source, edit, seams: list[int]) -> dict:
    """Warp error along the source flow, flicker at seams and elsewhere, colour drift (see module doc)."""
    from videograin.motion.warp_error import source_flows, warp_error

    forward, backward = source_flows(source)
    warp = warp_error(edit, forward, backward).value
    change = lambda x: (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    excess = change(edit) - change(source)                          # [F-1]: change into frame t+1
    at = [t - 1 for t in seams if 0 < t < edit.shape[0]]
    rest = [t for t in range(excess.shape[0]) if t not in at]
    drift = (edit.mean(dim=(1, 2)) - source.mean(dim=(1, 2))).std(dim=0).mean()
    return {"warp_error": float(warp), "seam_flicker": float(excess[at].mean()) if at else None,
            "other_flicker": float(excess[rest].mean()) if rest else None, "colour_drift": float(drift)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", type=Path, default=BENCH.parent / ".host" / "ComfyUI")
    ap.add_argument("--frames", default="16,64")
    ap.add_argument("--size", default="512x512")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--full-max", type=int, default=64, help="largest clip also edited with full attention")
    ap.add_argument("--window", default="16,4,2", help="window,overlap,anchors")
    ap.add_argument("--vae-chunk", type=int, default=eb.VAE_CHUNK)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU at a toy size")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    cpu = args.smoke or not torch.cuda.is_available()
    eb.import_comfy(args.comfy, cpu)
    if args.smoke:
        args.frames, args.size, args.steps, args.full_max, args.window = "6", "128x64", 2, 6, "4,1,1"
    eb.VAE_CHUNK = args.vae_chunk
    pack = eb.import_pack()
    windows_node = __import__("videograin.nodes.attention_nodes", fromlist=["x"]).VideoGrainTemporalWindows
    device = torch.device("cpu") if cpu else torch.device("cuda")
    model, clip, vae = eb.build_checkpoint(tiny=args.smoke, checkpoint=args.checkpoint)
    width, height = (int(v) for v in args.size.split("x"))
    window, overlap, anchors = (int(v) for v in args.window.split(","))
    windowed_model = eb.call(windows_node, model=model, window=window, overlap=overlap, anchors=anchors)[0]
    rows = []
    for frames in (int(f) for f in args.frames.split(",")):
        case = clip_case(pack, model, clip, vae, frames, width, height)
        plan = windowed_model.model_options["transformer_options"]["videograin_windows"].plan(frames)
        seams = [start for start, _ in plan.windows[1:]]
        row = {"frames": frames, "size": args.size, "steps": args.steps, "window": args.window,
               "windows": len(plan.windows)}
        variants = [("windowed", windowed_model)] + ([("full", model)] if frames <= args.full_max else [])
        for name, m in variants:
            case.model = m
            t0 = time.perf_counter()
            stats, _ = eb.whole_edit(pack, case, args.steps, True, device)
            row[name] = {**stats, **seam_figures(case.images, case.decoded.float().cpu(), seams),
                         "wall_s": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2))
    print("\n| frames | windows | full: time / peak | windowed: time / peak | windowed/full | warp err full / win "
          "| seam flicker (win) | other flicker (win) | colour drift full / win |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        full, win = r.get("full"), r["windowed"]
        f2 = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"| {r['frames']} | {r['windows']} | {eb._fmt(full)} | {eb._fmt(win)} | {eb._ratio(win, full)} | "
              f"{f2(full and full['warp_error'])} / {f2(win['warp_error'])} | {f2(win['seam_flicker'])} | "
              f"{f2(win['other_flicker'])} | {f2(full and full['colour_drift'])} / {f2(win['colour_drift'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
