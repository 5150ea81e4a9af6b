"""Whole-edit and per-step benchmark of VideoGrain in ComfyUI, with its baselines in the same run.

Runs in-process (no server) on the pack's real nodes and ComfyUI's real model code, with a random
full-size SD1.5 checkpoint built from a fixed seed (`.ci/make_models.py`; no download):

    python bench/edit_benchmark.py --comfy .host/ComfyUI --frames 8,16 --sizes 512x512 \
        --parts step,edit --out bench.json

Per-step (one UNet call on the CFG pair at step 0, inside the modulation window) it times
  floor      unmodulated full space-time attention everywhere (the model without ST-Layout),
  reference  ST-Layout Attn through the materialised reference (attention/reference.py),
  fast       ST-Layout Attn through the fast exact path (attention/fast.py),
and reports each one's median time and peak GPU memory (an out-of-memory is reported as such).
The whole edit (VAE encode, 49-step inversion, 50-step edit at CFG 7.5, VAE decode) is timed for
the floor and the fast path, and a re-edit reusing the inversion for the fast path.

`--trajectory synthetic` (or `flow`) also times the same fast whole edit with trajectory attention
(VideoGrainTrajectoryAttention at `--trajectory-resolutions`, default 64 = the highest level) on the
model given to both the inversion and the edit, beside the edit without it (target ≤ 1.05×, bench/README.md),
and times the CPU path separately: OpenCV DIS flow of the clip's frames, then the trajectories. It also
reports the weight-free Warp-Err (`motion/warp_error.py`, along the source clip's OpenCV DIS flow, with
the forward-backward occlusion test) of the decoded fast edit with and without trajectory attention.
`--trajectory-gather` also times that edit with the per-slot gather route forced (the route the pack
used before the grouped one; docs/design.md §10.1), for an A/B in one process.
`synthetic` builds trajectories from a synthetic flow (a slow rotation plus a drift, so chains cross
cells and collide); `flow` from the DIS flow of the bench's frames. For example

    python bench/edit_benchmark.py --frames 16 --sizes 512x512 --parts edit --edit-variants floor \
        --trajectory synthetic --out bench_traj.json

`--smoke` runs everything with the tiny model on the CPU at a toy size (a CI check that the script
works; its numbers mean nothing).
"""
from __future__ import annotations

import argparse
import importlib
import json
import resource
import statistics
import sys
import time
import types
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
VAE_CHUNK = 4  # frames per VAE encode/decode call (--vae-chunk)


# ------------------------------------------------------------------------------------------ setup

def import_comfy(comfy_dir: Path, cpu: bool) -> None:
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = cpu
    comfy.cli_args.args.disable_smart_memory = False


def import_pack():
    """The pack as package `videograin` (and its `nodes` sub-package) without running the
    registries' __init__ files, so only the modules used here are imported."""
    for name, path in (("videograin", PACK_DIR), ("videograin.nodes", PACK_DIR / "nodes")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
    import importlib

    mods = {n: importlib.import_module(f"videograin.{n}") for n in (
        "nodes.layout_nodes", "nodes.inversion_nodes", "nodes.attention_nodes", "attention.patch",
        "attention.reference", "attention.fast", "nodes.motion_nodes", "motion.flow")}
    return types.SimpleNamespace(**{k.split(".")[-1]: v for k, v in mods.items()})


def build_checkpoint(tiny: bool, checkpoint: Path | None = None):
    """(MODEL, CLIP, VAE) from a random-weight SD1.5 (or tiny) state dict, via ComfyUI's loader, or
    from a checkpoint file exactly as CheckpointLoaderSimple loads it (host memory as a user sees it)."""
    import comfy.sd
    import torch

    if checkpoint is not None:
        torch.set_grad_enabled(False)
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(checkpoint), output_vae=True,
                                                                    output_clip=True)
        return model, clip, vae
    sys.path.insert(0, str(PACK_DIR / ".ci"))
    import make_models as mm
    torch.set_grad_enabled(False)
    if tiny:
        sd = mm.build_tiny(mm.SEEDS["tiny"], mm.load_tiny_module())
    else:
        sd = mm.build_full(mm.SEEDS["full"])
    sd = mm.to_fp16(sd)
    model, clip, vae, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True)
    return model, clip, vae


def call(node_cls, **inputs):
    """Run a V1 node the way ComfyUI does: instance method named by FUNCTION."""
    out = getattr(node_cls(), node_cls.FUNCTION)(**inputs)
    return out["result"] if isinstance(out, dict) else out


def moving_masks(frames: int, height: int, width: int, regions: int):
    """`regions` ellipses drifting across the frame: [F, H, W] float masks, non-overlapping."""
    import torch

    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    out = []
    for r in range(regions):
        cy = (r + 0.5) / regions
        m = []
        for f in range(frames):
            cx = 0.2 + 0.6 * ((f / max(frames - 1, 1) + r * 0.3) % 1.0)
            m.append((((xs - cx) / 0.15) ** 2 + ((ys - cy) / (0.4 / regions)) ** 2 <= 1.0).float())
        out.append(torch.stack(m))
    return out


# ------------------------------------------------------------------------------------------ timing

class Clock:
    """Wall time and peak device memory of a region, synchronising the device around it."""

    def __init__(self, device):
        import torch

        self.torch, self.device = torch, device

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def __enter__(self):
        self.sync()
        if self.device.type == "cuda":
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sync()
        self.seconds = time.perf_counter() - self.t0
        self.peak_gib = (self.torch.cuda.max_memory_allocated(self.device) / 2 ** 30
                         if self.device.type == "cuda" else float("nan"))
        return False


def is_oom(error: BaseException) -> bool:
    return "out of memory" in str(error).lower()


def vae_chunked(fn, x, chunk: int):
    """Encode or decode a clip a few frames at a time (bounded VAE memory for long clips)."""
    import torch

    return torch.cat([fn(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


class Case:
    """One clip size: frames, latent, conditioning, regions and layout built through the nodes."""

    def __init__(self, pack, model, clip, vae, frames: int, width: int, height: int, regions: int):
        import torch

        self.model, self.vae = model, vae
        gen = torch.Generator().manual_seed(0)
        low = torch.rand(frames, 3, height // 32, width // 32, generator=gen)
        images = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear").movedim(1, -1)
        self.images = images
        self.latent = None
        words = ["red car", "blue bird", "cherry blossoms", "old tree", "white boat", "green hill"]
        local = words[:regions]
        self.global_prompt = "a " + " and a ".join(local) + " in spring"
        self.source = encode_text(clip, "a video")
        self.negative = encode_text(clip, "")
        self.clip = clip
        self.masks = moving_masks(frames, height, width, regions)
        self.local = local
        self.pack = pack

    def encode(self):
        self.latent = {"samples": vae_chunked(self.vae.encode, self.images[..., :3], VAE_CHUNK)}
        return self.latent

    def layout(self, prompts=None):
        regions = None
        for mask, prompt in zip(self.masks, prompts or self.local):
            regions = call(self.pack.layout_nodes.VideoGrainRegion, mask=mask, prompt=prompt, kind="instance",
                           previous=regions)[0]
        positive, layout = call(self.pack.layout_nodes.VideoGrainLayout, clip=self.clip,
                                global_prompt=self.global_prompt if prompts is None else " and ".join(prompts),
                                regions=regions, latent=self.latent)
        return positive, layout


def encode_text(clip, text: str):
    """CONDITIONING as core CLIPTextEncode makes it (without importing core's node module)."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


def patched(pack, model, layout):
    return call(pack.attention_nodes.VideoGrainApplySTLayout, model=model, layout=layout, cross_strength=1.0,
                self_strength=0.3, modulated_fraction=0.3, levels="below_highest", cross_branch="cond",
                self_branch="uncond")[0]


def unet_call_timer(pack, case, patcher, positive, steps: int, repeats: int, device):
    """Median seconds and peak GiB of one UNet call on the CFG pair at editing step 0."""
    import comfy.model_management as mm
    import torch

    schedule = importlib.import_module("videograin.sampling.schedule")
    sched = schedule.editing_sigmas(steps, patcher.get_model_object("model_sampling").sigmas)
    mm.load_models_gpu([patcher])
    inner = patcher.model
    x = patcher.model.process_latent_in(case.latent["samples"].to(device, torch.float32)) \
        * float(schedule.inv_sqrt_alpha_bar(sched[0]))
    f = x.shape[0]
    ctx = torch.cat([case.negative[0][0], positive[0][0]]).to(device)
    context = ctx.repeat_interleave(f, 0)
    sigma = sched[0].to(device).repeat(2 * f)
    options = dict(patcher.model_options["transformer_options"])
    options.update({"cond_or_uncond": [1, 0], "sigmas": sigma, "sample_sigmas": sched.to(device)})
    xin = torch.cat([x, x])
    times, peaks = [], []
    for _ in range(repeats + 1):
        with Clock(device) as c:
            out = inner.apply_model(xin, sigma, c_crossattn=context, transformer_options=options)
        assert torch.isfinite(out).all(), "non-finite UNet output"
        times.append(c.seconds)
        peaks.append(c.peak_gib)
    return statistics.median(times[1:]), max(peaks)


def step_table(pack, case, positive, layout, steps, repeats, device) -> dict:
    """Per-step time and peak for floor, reference and fast (OOM reported, not raised)."""
    import torch

    rows = {}
    st = pack.patch
    fast_fn = st.modulated_attention
    spacetime_clone = importlib.import_module("videograin.nodes.model_patch").spacetime_clone
    variants = [("floor", lambda: spacetime_clone(case.model), fast_fn),
                ("reference", lambda: patched(pack, case.model, layout), pack.reference.modulated_attention_reference),
                ("fast", lambda: patched(pack, case.model, layout), fast_fn)]
    for name, build, kernel in variants:
        try:
            st.modulated_attention = kernel  # the bench swaps the pack's own kernel, nothing else
            seconds, peak = unet_call_timer(pack, case, build(), positive, steps, repeats, device)
            rows[name] = {"seconds": seconds, "peak_gib": peak}
        except torch.OutOfMemoryError as e:  # noqa: PERF203
            rows[name] = {"error": "out of memory", "detail": str(e).splitlines()[0]}
        except RuntimeError as e:
            if not is_oom(e):
                raise
            rows[name] = {"error": "out of memory", "detail": str(e).splitlines()[0]}
        finally:
            st.modulated_attention = fast_fn
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def whole_edit(pack, case, steps: int, modulated: bool, device, inversion=None, base=None) -> dict:
    """Seconds and peak GiB of encode + invert + edit + decode (or, with `inversion`, a re-edit).

    `base` replaces the case's model for both the inversion and the edit (e.g. with trajectory attention).
    """
    import comfy.model_management as mm

    base = case.model if base is None else base
    with Clock(device) as total:
        if inversion is None:
            case.encode()
            inversion = call(pack.inversion_nodes.VideoGrainInvert, model=base, positive=case.source, cache="off",
                             latent=case.latent, steps=steps)[0]
        positive, layout = case.layout()
        model = patched(pack, base, layout) if modulated else base
        latent = call(pack.inversion_nodes.VideoGrainSampler, model=model, inversion=inversion, positive=positive,
                      negative=case.negative, cfg=7.5, steps=steps, seed=42,
                      background="source_noise" if modulated else "off")[0]
        frames = vae_chunked(case.vae.decode, latent["samples"], VAE_CHUNK)
    assert frames.shape[0] == case.images.shape[0]
    case.decoded = frames  # the edit's frames, for quality figures (bench/long_clip_benchmark.py)
    mm.soft_empty_cache()
    return {"seconds": total.seconds, "peak_gib": total.peak_gib}, inversion


def synthetic_flow(frames: int, height: int, width: int):
    """[F-1, H, W, 2] pixels: a 1.5° rotation about the centre plus a drift of 1/64 of the width per frame."""
    import math

    import torch

    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    cy, cx, a = (height - 1) / 2, (width - 1) / 2, math.radians(1.5)
    dx = math.cos(a) * (xs - cx) - math.sin(a) * (ys - cy) + cx - xs + width / 64
    dy = math.sin(a) * (xs - cx) + math.cos(a) * (ys - cy) + cy - ys
    return torch.stack([dx, dy], dim=-1).expand(frames - 1, -1, -1, -1).contiguous()


def trajectory_model(pack, case, source: str, resolutions: str):
    """(model with trajectory attention, CPU seconds of the DIS flow of the frames, seconds of the trajectories)."""
    flow_mod = pack.flow
    t0 = time.perf_counter()
    computed = flow_mod.clip_flow(case.images[..., :3], "dis", "medium")
    flow_seconds = time.perf_counter() - t0
    frames, height, width = case.images.shape[:3]
    flow = computed if source == "flow" else flow_mod.VideoFlow(synthetic_flow(frames, height, width), "synthetic")
    t0 = time.perf_counter()
    model = call(pack.motion_nodes.VideoGrainTrajectoryAttention, model=case.model, flow=flow,
                 resolutions=resolutions, seed=0, slot_layout="chain")[0]
    return model, flow_seconds, time.perf_counter() - t0


def gather_route_edit(pack, case, steps: int, device, traj_model) -> dict:
    """The trajectory edit with `trajectory_attention` forced onto its per-slot gather route."""
    trajectory = importlib.import_module("videograin.attention.trajectory")
    route = trajectory.attention_route
    trajectory.attention_route = lambda traj, device="cpu": "gather"  # the bench swaps the route, nothing else
    try:
        timing, _ = whole_edit(pack, case, steps, True, device, base=traj_model)
    finally:
        trajectory.attention_route = route
    return timing


def warp_errors(case, edits: dict) -> dict:
    """Warp-Err of each decoded edit [F, H, W, 3] along the source clip's DIS flow (computed once here)."""
    from videograin.motion.warp_error import source_flows, warp_error

    forward, backward = source_flows(case.images[..., :3])
    return {name: float(warp_error(frames.float().cpu(), forward, backward).value) for name, frames in edits.items()}


def host_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv=None) -> int:
    global VAE_CHUNK
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", type=Path, default=PACK_DIR / ".host" / "ComfyUI")
    ap.add_argument("--frames", default="8,16")
    ap.add_argument("--sizes", default="512x512")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--regions", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default="step,edit", help="step, edit, or both")
    ap.add_argument("--edit-frames", default="16", help="frame counts that also get whole-edit timings")
    ap.add_argument("--edit-variants", default="floor,fast,reedit", help="which whole edits to time")
    ap.add_argument("--vae-chunk", type=int, default=VAE_CHUNK, help="frames per VAE encode/decode call")
    ap.add_argument("--checkpoint", type=Path, help="load this checkpoint file instead of building in memory")
    ap.add_argument("--trajectory", choices=("off", "synthetic", "flow"), default="off",
                    help="also time the fast whole edit with trajectory attention (flow: synthetic or DIS of the frames)")
    ap.add_argument("--trajectory-resolutions", default="64", help="VideoGrainTrajectoryAttention resolutions")
    ap.add_argument("--trajectory-gather", action="store_true",
                    help="also time the trajectory edit with the per-slot gather route forced")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU at a toy size")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import torch

    cpu = args.smoke or not torch.cuda.is_available()
    import_comfy(args.comfy, cpu)
    if args.smoke:
        args.frames, args.sizes, args.steps, args.repeats, args.edit_frames = "2", "128x64", 4, 1, "2"
    pack = import_pack()
    device = torch.device("cpu") if cpu else torch.device("cuda")
    t0 = time.perf_counter()
    VAE_CHUNK = args.vae_chunk
    model, clip, vae = build_checkpoint(tiny=args.smoke, checkpoint=args.checkpoint)
    print(f"model built in {time.perf_counter() - t0:.1f} s on {torch.cuda.get_device_name() if not cpu else 'cpu'}, "
          f"torch {torch.__version__}", flush=True)
    parts = set(args.parts.split(","))
    edit_frames = {int(f) for f in args.edit_frames.split(",") if f}
    results = []
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        for frames in (int(f) for f in args.frames.split(",")):
            case = Case(pack, model, clip, vae, frames, width, height, args.regions)
            row = {"size": size, "frames": frames}
            case.encode()
            positive, layout = case.layout()
            if "step" in parts:
                row["step"] = step_table(pack, case, positive, layout, args.steps, args.repeats, device)
            if "edit" in parts and frames in edit_frames:
                variants = set(args.edit_variants.split(","))
                if "floor" in variants:
                    row["edit_floor"], _ = whole_edit(pack, case, args.steps, False, device)
                row["edit_fast"], inversion = whole_edit(pack, case, args.steps, True, device)
                decoded_fast = case.decoded
                if "reedit" in variants:
                    row["reedit_fast"], _ = whole_edit(pack, case, args.steps, True, device, inversion)
                if args.trajectory != "off":
                    traj_model, flow_s, build_s = trajectory_model(pack, case, args.trajectory,
                                                                   args.trajectory_resolutions)
                    row["trajectory_cpu"] = {"flow_seconds": flow_s, "trajectories_seconds": build_s,
                                             "resolutions": args.trajectory_resolutions, "flow": args.trajectory}
                    row["edit_traj"], _ = whole_edit(pack, case, args.steps, True, device, base=traj_model)
                    edits = {"fast": decoded_fast, "traj": case.decoded}
                    if args.trajectory_gather:
                        row["edit_traj_gather"] = gather_route_edit(pack, case, args.steps, device, traj_model)
                        edits["traj_gather"] = case.decoded
                    row["warp_error"] = {**warp_errors(case, edits), "flow": "dis", "error": "squared",
                                         "scale": 1000.0}
            row["steps"] = args.steps
            row["host_rss_gib"] = host_rss_gib()
            results.append(row)
            print(json.dumps(row), flush=True)
            if args.out:  # after every row, so a run cut short still leaves what it measured
                args.out.write_text(json.dumps(results, indent=2))
    print_table(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "—"
    if "error" in cell:
        return cell["error"]
    return f"{cell['seconds'] * 1000:.0f} ms / {cell['peak_gib']:.2f} GiB" if cell["seconds"] < 10 else \
        f"{cell['seconds']:.1f} s / {cell['peak_gib']:.2f} GiB"


def _ratio(a: dict | None, b: dict | None) -> str:
    if not a or not b or "error" in a or "error" in b:
        return "—"
    return f"{a['seconds'] / b['seconds']:.2f}"


def print_table(results: list[dict]) -> None:
    print("\n| size | frames | floor step | reference step | fast step | fast/floor | reference/fast |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s = r.get("step", {})
        print(f"| {r['size']} | {r['frames']} | {_fmt(s.get('floor'))} | {_fmt(s.get('reference'))} | "
              f"{_fmt(s.get('fast'))} | {_ratio(s.get('fast'), s.get('floor'))} | "
              f"{_ratio(s.get('reference'), s.get('fast'))} |")
    edits = [r for r in results if "edit_fast" in r]
    if edits:
        print("\n| size | frames | steps | whole edit, floor | whole edit, fast | fast/floor | re-edit (fast) | "
              "re-edit/edit | host RSS |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in edits:
            print(f"| {r['size']} | {r['frames']} | {r['steps']} | {_fmt(r.get('edit_floor'))} | "
                  f"{_fmt(r['edit_fast'])} | {_ratio(r['edit_fast'], r.get('edit_floor'))} | "
                  f"{_fmt(r.get('reedit_fast'))} | {_ratio(r.get('reedit_fast'), r['edit_fast'])} | "
                  f"{r['host_rss_gib']:.1f} GiB |")
    trajs = [r for r in results if "edit_traj" in r]
    if trajs:
        print("\n| size | frames | steps | resolutions | whole edit, fast | whole edit, fast + trajectory | "
              "traj/fast | + trajectory, gather route | gather/fast | DIS flow (CPU) | trajectories (CPU) | "
              "Warp-Err fast | Warp-Err fast + trajectory |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in trajs:
            cpu = r["trajectory_cpu"]
            print(f"| {r['size']} | {r['frames']} | {r['steps']} | {cpu['resolutions']} ({cpu['flow']}) | "
                  f"{_fmt(r['edit_fast'])} | {_fmt(r['edit_traj'])} | {_ratio(r['edit_traj'], r['edit_fast'])} | "
                  f"{_fmt(r.get('edit_traj_gather'))} | {_ratio(r.get('edit_traj_gather'), r['edit_fast'])} | "
                  f"{cpu['flow_seconds'] * 1000:.0f} ms | {cpu['trajectories_seconds'] * 1000:.0f} ms | "
                  f"{r['warp_error']['fast']:.3f} | {r['warp_error']['traj']:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
