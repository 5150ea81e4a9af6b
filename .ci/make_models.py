"""Writes the two random-weight SD1.5 checkpoints used by the tests and the CPU demo.

Run with the host venv's python (ComfyUI must be importable; see --comfy):

    .host/venv/bin/python .ci/make_models.py [--out DIR] [--only full|tiny] [--skip-check]

- videograin_random_sd15.safetensors: the exact SD1.5 architecture (UNet, CLIP ViT-L text model,
  KL VAE) with random weights. Core CheckpointLoaderSimple detects it as SD1.5 unaided.
- videograin_tiny_sd15.safetensors: SD1.5's block layout and attention keys at model_channels 32 /
  context_dim 64, a 64-wide 4-layer CLIP and TAESD as VAE. Needs .ci/tiny_sd15 (loaded like a pack)
  for detection.

Both are built from ComfyUI's own classes with a fixed seed, so the same ComfyUI gives the same
bytes. Every file is checked after writing: it is loaded back the way the server loads it, and a
few sampling steps plus a VAE decode must stay finite.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
DEFAULT_COMFY = PACK_DIR / ".host" / "ComfyUI"
DEFAULT_OUT = PACK_DIR / ".host" / "base" / "models" / "checkpoints"

FULL_NAME = "videograin_random_sd15.safetensors"
TINY_NAME = "videograin_tiny_sd15.safetensors"
SEEDS = {"full": 1500, "tiny": 1532}

# ComfyUI's SD1.5 UNet layout (what comfy.model_detection derives from a real SD1.5 file); only the
# two widths vary between the full and the tiny model.
SD15_LAYOUT = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 4,
    "out_channels": 4,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}
SD15_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
            "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [],
            "dropout": 0.0}


def import_comfy(comfy_dir: Path) -> None:
    """Make ComfyUI importable in CPU mode (must run before comfy.model_management is imported)."""
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True


def load_tiny_module():
    """Import .ci/tiny_sd15 (it registers TinySD15 with ComfyUI's detection list on import)."""
    if str(PACK_DIR / ".ci") not in sys.path:
        sys.path.insert(0, str(PACK_DIR / ".ci"))
    return importlib.import_module("tiny_sd15")


def unet_config(model_channels: int, context_dim: int) -> dict:
    return {**SD15_LAYOUT, "model_channels": model_channels, "context_dim": context_dim}


def randomize(module, seed: int) -> None:
    """Deterministic random init of every parameter.

    ComfyUI's ops skip weight init (their reset_parameters does nothing) and leave uninitialised
    memory, so: zero everything, then run torch's own reset_parameters of each layer class. That
    init is scaled by fan-in (uniform in ±1/sqrt(fan_in)), and the UNet's GroupNorms and the
    sampler's input scaling keep activations O(1): `check_sampling` asserts that they stay far
    from fp16's range. Parameters owned by no torch layer (TAESD's latent affine, CLIP's
    logit_scale) stay zero unless the builder sets them.
    """
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        for sub in module.modules():
            for cls in type(sub).__mro__:
                if cls.__module__.startswith("torch.nn.") and "reset_parameters" in cls.__dict__:
                    cls.reset_parameters(sub)
                    break


def to_fp16(sd: dict) -> dict:
    import torch

    out = {}
    for k, v in sd.items():
        if not torch.isfinite(v.float()).all():
            raise RuntimeError(f"non-finite weights in {k}")
        out[k] = v.detach().to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous()
    return out


def build_unet(config_cls, model_channels: int, context_dim: int, seed: int) -> dict:
    model_config = config_cls(unet_config(model_channels, context_dim))
    model = model_config.get_model({})
    unet = model.diffusion_model
    randomize(unet, seed)
    return {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}


def build_clip(model_config, clip_cls, seed: int) -> dict:
    import torch

    clip = clip_cls(device="cpu", dtype=torch.float32)
    randomize(clip, seed)
    sd = clip.state_dict()
    sd = model_config.process_clip_state_dict_for_saving(sd)
    return {k: v for k, v in sd.items() if k.startswith("cond_stage_model.")}


def build_kl_vae(seed: int) -> dict:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=SD15_VAE, embed_dim=4)
    randomize(vae, seed)
    return {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}


def build_taesd(seed: int) -> dict:
    import torch
    from comfy.taesd.taesd import TAESD

    vae = TAESD(latent_channels=4)
    randomize(vae, seed)
    with torch.no_grad():  # TAESD's latent affine: identity (owned by no layer, so set here)
        vae.vae_scale.fill_(1.0)
        vae.vae_shift.fill_(0.0)
    return {f"first_stage_model.{k}": v for k, v in vae.state_dict().items()}


def build_full(seed: int) -> dict:
    import comfy.sd1_clip
    import comfy.supported_models

    cfg = comfy.supported_models.SD15(unet_config(320, 768))
    sd = build_unet(comfy.supported_models.SD15, 320, 768, seed)
    sd.update(build_clip(cfg, comfy.sd1_clip.SD1ClipModel, seed + 1))
    sd.update(build_kl_vae(seed + 2))
    return sd


def build_tiny(seed: int, tiny) -> dict:
    cfg = tiny.TinySD15(unet_config(tiny.TINY_MODEL_CHANNELS, tiny.TINY_CONTEXT_DIM))
    sd = build_unet(tiny.TinySD15, tiny.TINY_MODEL_CHANNELS, tiny.TINY_CONTEXT_DIM, seed)
    sd.update(build_clip(cfg, tiny.TinySD1ClipModel, seed + 1))
    sd.update(build_taesd(seed + 2))
    return sd


def check_detection(sd: dict, expected: type) -> None:
    import comfy.model_detection

    found = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
    if type(found) is not expected:
        raise RuntimeError(f"detected as {type(found).__name__}, expected {expected.__name__}")


FP16_SAFE = 1e4  # largest |activation| accepted: fp16 overflows at 65504, keep a wide margin


def check_sampling(path: Path, steps: int = 3) -> dict:
    """Load `path` as CheckpointLoaderSimple does, sample one 64x64 image with CFG and decode.

    Conditioning, UNet activations, the latent and the decoded images must be finite, and every
    UNet activation must stay below FP16_SAFE (GPU runs use fp16)."""
    import torch
    import comfy.sample
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    peak = [0.0]

    def record(_module, _inputs, output):
        if torch.is_tensor(output):
            peak[0] = max(peak[0], float(output.detach().abs().float().max()))

    unet = model.model.diffusion_model
    hooks = [m.register_forward_hook(record) for m in unet.modules()]
    try:
        pos = clip.encode_from_tokens_scheduled(clip.tokenize("a red ball on a striped floor"))
        neg = clip.encode_from_tokens_scheduled(clip.tokenize(""))
        latent = torch.zeros(1, 4, 8, 8)  # one image: the full UNet costs seconds per step on CPU
        noise = comfy.sample.prepare_noise(latent, 0)
        out = comfy.sample.sample(model, noise, steps, 7.0, "euler", "normal", pos, neg, latent,
                                  disable_pbar=True, seed=0)
    finally:
        for h in hooks:
            h.remove()
    images = vae.decode(out)
    for name, t in (("cond", pos[0][0]), ("latent", out), ("image", images)):
        if not torch.isfinite(t).all():
            raise RuntimeError(f"{path.name}: non-finite {name} after {steps} steps")
    if not peak[0] < FP16_SAFE:
        raise RuntimeError(f"{path.name}: UNet activation {peak[0]:.3g} exceeds {FP16_SAFE:g}")
    return {"unet_peak": round(peak[0], 2), "latent_std": round(float(out.std()), 2),
            "image_std": round(float(images.std()), 3)}


def write(sd: dict, path: Path, kind: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(to_fp16(sd), str(tmp), metadata={"videograin": f"random {kind} SD1.5, seed {SEEDS[kind]}"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)  # never leave a half-written checkpoint under the final name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", type=Path, default=Path(os.environ.get("VIDEOGRAIN_COMFY", DEFAULT_COMFY)))
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="models/checkpoints folder")
    ap.add_argument("--only", choices=["full", "tiny"], help="build one of the two")
    ap.add_argument("--skip-check", action="store_true", help="skip the load-and-sample check")
    args = ap.parse_args(argv)

    import_comfy(args.comfy)
    import torch
    import comfy.supported_models

    tiny = load_tiny_module()
    torch.set_grad_enabled(False)
    for kind in ("tiny", "full"):
        if args.only and kind != args.only:
            continue
        t0 = time.perf_counter()
        if kind == "full":
            sd, expected, path = build_full(SEEDS[kind]), comfy.supported_models.SD15, args.out / FULL_NAME
        else:
            sd, expected, path = build_tiny(SEEDS[kind], tiny), tiny.TinySD15, args.out / TINY_NAME
        check_detection(sd, expected)
        n_params = sum(v.numel() for v in sd.values())
        write(sd, path, kind)
        del sd
        built = time.perf_counter() - t0
        stats = {} if args.skip_check else check_sampling(path)
        print(f"[videograin] {path.name}: {n_params / 1e6:.1f} M params, "
              f"{path.stat().st_size / 2**20:.1f} MiB, built in {built:.1f} s, "
              f"checked in {time.perf_counter() - t0 - built:.1f} s {stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
