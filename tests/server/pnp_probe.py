"""In-process probe of PnP injection on ComfyUI's real model code (run by test_pnp.py in a subprocess).

The server tests see only a node's final output; whether *exactly* the first k editing steps change
needs the model's prediction at every step for the same input. So this script loads ComfyUI 0.3.75 and
the tiny SD1.5-layout model in-process, runs the pack's own nodes (VideoGrainPnP, VideoGrainInvert,
VideoGrainSampler) and, in place of the sampler's DDIM loop, evaluates the sampler's real denoiser
(ComfyUI's CFG guider over the patched UNet) at every editing σ on a fixed latent (the inversion's
level at that σ). It prints one JSON object: per step whether the PnP prediction equals the PnP-off one,
the features' byte count and the formula's, and whether the inversion latent is unchanged by recording.

Usage: python pnp_probe.py <ComfyUI dir> <inject_step> <steps>
"""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    comfy_dir, inject_step, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sys.path.insert(0, str(comfy_dir))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import torch

    torch.set_grad_enabled(False)
    package = types.ModuleType("videograin")
    package.__path__ = [str(REPO)]
    sys.modules["videograin"] = package
    sys.path.insert(0, str(REPO / ".ci"))
    import comfy.sd
    import make_models as mm

    from videograin.masks.layout import attention_sizes
    from videograin.nodes import inversion_nodes as inv
    from videograin.nodes.pnp_nodes import VideoGrainPnP
    from videograin.sampling.pnp_features import expected_bytes

    sd = mm.to_fp16(mm.build_tiny(mm.SEEDS["tiny"], mm.load_tiny_module()))
    model, clip, _vae, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True)

    def encode(text):
        tokens = clip.tokenize(text)
        return clip.encode_from_tokens_scheduled(tokens)

    source, edit, negative = encode("a red ball"), encode("a blue ball"), encode("")
    torch.manual_seed(0)
    latent = {"samples": torch.randn(2, 4, 8, 12)}  # 2 frames, non-square latent

    pnp_model = VideoGrainPnP().apply(model, inject_step, negative)[0]
    plain_model = VideoGrainPnP().apply(model, 0, negative)[0]
    record, _ = _result(inv.VideoGrainInvert().invert(pnp_model, source, latent, steps, cache="off"))
    record_plain, _ = _result(inv.VideoGrainInvert().invert(plain_model, source, latent, steps, cache="off"))

    levels = record.trajectory.flip(0)  # model-space latent at σ_0 (top) … σ_{n-1}
    predictions = {}

    def probe(denoise, x_T, sigmas, blend=None, on_step=None):
        outs = [denoise(levels[i].to(x_T), sigmas[i]) for i in range(len(sigmas) - 1)]
        predictions.setdefault("runs", []).append(outs)
        return x_T

    inv.ddim.sample = probe  # this process only: the probe replaces the loop, the denoiser is the real one
    for m in (pnp_model, plain_model):
        inv.VideoGrainSampler().sample(m, record, edit, negative, 5.0, steps, 0, "off")
    with_pnp, without = predictions["runs"]
    model_channels = model.model.model_config.unet_config["model_channels"]
    itemsize = next(iter(record.pnp.tensors.values())).element_size()
    print(json.dumps({
        "equal_per_step": [bool(torch.equal(a, b)) for a, b in zip(with_pnp, without)],
        "max_diff_per_step": [float((a - b).abs().max()) for a, b in zip(with_pnp, without)],
        "feature_bytes": record.pnp.nbytes,
        "formula_bytes": expected_bytes(2, attention_sizes((8, 12)), model_channels, inject_step, itemsize),
        "feature_count": len(record.pnp.tensors),
        "inversion_unchanged": bool(torch.equal(record.latent_T, record_plain.latent_T)),
        "plain_has_no_features": record_plain.pnp is None,
    }))
    return 0


def _result(out):
    return out["result"] if isinstance(out, dict) else out


if __name__ == "__main__":
    sys.exit(main())
