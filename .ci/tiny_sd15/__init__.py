"""Dev-host only: lets core ComfyUI detect and load the tiny SD1.5-layout test checkpoint.

ComfyUI loads this folder like a custom node pack (it is linked into the dev host's custom_nodes by
.ci/setup_host.sh, never shipped with the pack). Importing it puts a `TinySD15` model config at the
front of `comfy.supported_models.models`. The config only matches a UNet with model_channels 32 and
context_dim 64, values no real checkpoint has, so detection of every real model is unchanged.

The tiny model keeps SD1.5's block layout, 8 attention heads and attention patch keys; only the
widths shrink. Its text encoder is a 64-wide, 4-layer CLIP text model (SD1.5's tokenizer) and its
VAE is TAESD (keys `first_stage_model.taesd_encoder.*` / `taesd_decoder.*`).
"""
from __future__ import annotations

import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base

TINY_MODEL_CHANNELS = 32
TINY_CONTEXT_DIM = 64

# Overrides applied on top of ComfyUI's sd1_clip_config.json (CLIP ViT-L/14 text model).
TINY_CLIP_CONFIG = {
    "hidden_size": TINY_CONTEXT_DIM,
    "intermediate_size": 4 * TINY_CONTEXT_DIM,
    "num_attention_heads": 4,
    "num_hidden_layers": 4,
    "projection_dim": TINY_CONTEXT_DIM,
}


class TinySD1ClipModel(comfy.sd1_clip.SD1ClipModel):
    """SD1.5's CLIP text encoder wrapper, built with the tiny text-model config."""

    def __init__(self, device="cpu", dtype=None, model_options=None, **kwargs):
        options = dict(model_options or {})
        # SDClipModel reads "<model_name>_model_config" (model_name is "clip_l") as config overrides.
        options["clip_l_model_config"] = {**TINY_CLIP_CONFIG, **options.get("clip_l_model_config", {})}
        super().__init__(device=device, dtype=dtype, model_options=options, **kwargs)


class TinySD15(comfy.supported_models.SD15):
    """Model config of the tiny SD1.5-layout checkpoint (model_channels 32, context_dim 64)."""

    unet_config = {
        "context_dim": TINY_CONTEXT_DIM,
        "model_channels": TINY_MODEL_CHANNELS,
        "use_linear_in_transformer": False,
        "adm_in_channels": None,
        "use_temporal_attention": False,
    }

    def clip_target(self, state_dict=None):
        return comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, TinySD1ClipModel)


def register() -> None:
    """Put TinySD15 first in ComfyUI's detection list (idempotent, also across module reloads)."""
    models = comfy.supported_models.models
    models[:] = [m for m in models if not getattr(m, "_videograin_tiny_sd15", False)]
    models.insert(0, TinySD15)


TinySD15._videograin_tiny_sd15 = True
register()

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
