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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    comfy_dir, inject_step, steps = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    sys.path.insert(0, str(REPO / "bench"))
    import edit_benchmark as eb  # the benchmarks' in-process ComfyUI and model setup

    eb.import_comfy(comfy_dir, cpu=True)
    eb.import_pack()
    import torch

    from videograin.masks.layout import attention_sizes
    from videograin.nodes import inversion_nodes as inv
    from videograin.nodes.pnp_nodes import VideoGrainPnP
    from videograin.sampling.pnp_features import expected_bytes

    model, clip, _vae = eb.build_checkpoint(tiny=True)

    source, edit, negative = (eb.encode_text(clip, t) for t in ("a red ball", "a blue ball", ""))
    torch.manual_seed(0)
    latent = {"samples": torch.randn(2, 4, 8, 12)}  # 2 frames, non-square latent

    pnp_model = eb.call(VideoGrainPnP, model=model, inject_step=inject_step, negative=negative)[0]
    plain_model = eb.call(VideoGrainPnP, model=model, inject_step=0, negative=negative)[0]
    record = eb.call(inv.VideoGrainInvert, model=pnp_model, positive=source, latent=latent, steps=steps,
                     cache="off")[0]
    record_plain = eb.call(inv.VideoGrainInvert, model=plain_model, positive=source, latent=latent, steps=steps,
                           cache="off")[0]

    levels = record.trajectory.flip(0)  # model-space latent at σ_0 (top) … σ_{n-1}
    predictions = {}

    def probe(denoise, x_T, sigmas, blend=None, on_step=None):
        outs = [denoise(levels[i].to(x_T), sigmas[i]) for i in range(len(sigmas) - 1)]
        predictions.setdefault("runs", []).append(outs)
        return x_T

    inv.ddim.sample = probe  # this process only: the probe replaces the loop, the denoiser is the real one
    for m in (pnp_model, plain_model):
        eb.call(inv.VideoGrainSampler, model=m, inversion=record, positive=edit, negative=negative, cfg=5.0,
                steps=steps, seed=0, background="off")
    with_pnp, without = predictions["runs"]
    model_channels = model.model.model_config.unet_config["model_channels"]
    itemsize = next(iter(record.pnp.tensors.values())).element_size()
    print(json.dumps({  # noqa: T201 - the probe reports to the test on stdout
        "equal_per_step": [bool(torch.equal(a, b)) for a, b in zip(with_pnp, without)],
        "max_diff_per_step": [float((a - b).abs().max()) for a, b in zip(with_pnp, without)],
        "feature_bytes": record.pnp.nbytes,
        "formula_bytes": expected_bytes(2, attention_sizes((8, 12)), model_channels, inject_step, itemsize),
        "feature_count": len(record.pnp.tensors),
        "inversion_unchanged": bool(torch.equal(record.latent_T, record_plain.latent_T)),
        "plain_has_no_features": record_plain.pnp is None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
