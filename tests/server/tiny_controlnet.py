"""Writes a random-weight ControlNet for the tiny SD1.5-layout test model (test-only, fixed seed).

Run with the host's Python: `python tiny_controlnet.py OUT.safetensors [COMFY_DIR]`. The network is
core's own `comfy.cldm.cldm.ControlNet` at the tiny UNet's widths, with an RGB hint, saved with the
`control_model.` prefix so that core ControlNetLoader detects it (through .ci/tiny_sd15) like an
SD1.5 ControlNet. Its zero convolutions are random, not zero, so its residuals change the UNet.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SEED = 2025


def main(out: Path, comfy_dir: Path) -> None:
    sys.path.insert(0, str(REPO / ".ci"))
    import make_models

    make_models.import_comfy(comfy_dir)
    tiny = make_models.load_tiny_module()

    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops
    import torch
    from safetensors.torch import save_file

    config = make_models.unet_config(tiny.TINY_MODEL_CHANNELS, tiny.TINY_CONTEXT_DIM)
    config.pop("out_channels")
    config["num_heads"] = 8  # SD1.5's heads (the config class adds it for the UNet)
    net = comfy.cldm.cldm.ControlNet(**config, hint_channels=3, operations=comfy.ops.disable_weight_init)
    make_models.randomize(net, SEED)
    sd = {f"control_model.{k}": v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    if not isinstance(comfy.controlnet.load_controlnet_state_dict(dict(sd)), comfy.controlnet.ControlNet):
        raise RuntimeError("core does not load the written ControlNet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(sd, str(tmp))
    tmp.replace(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / ".host" / "ComfyUI")
