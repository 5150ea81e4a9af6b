"""VideoGrainPnP: switch on PnP feature injection for a model (docs/design.md §10, quirk 7)."""
from __future__ import annotations

from ..attention.pnp import PnPSettings
from .errors import VideoGrainInputError
from .model_patch import PNP_NODE, check_sd15, pnp_clone


class VideoGrainPnP:
    DESCRIPTION = ("PnP feature injection, as the official pipeline offers it: VideoGrainInvert records, for the "
                   "first inject_step editing steps, the residual-branch outputs of three decoder ResBlocks "
                   "(output_blocks 3, 4, 6) and the self-attention q/k of output_blocks 4–9, for both CFG halves, "
                   "and VideoGrainSampler swaps them in during those steps, which keeps the edit closer to the "
                   "source's structure. Put it on the model that goes to both VideoGrainInvert and "
                   "VideoGrainApplySTLayout. The features take about 0.59 GB of RAM per step at 16 frames of "
                   "512² (VideoGrainInvert reports the exact size). inject_step 0 switches it off.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with PnP recording (in VideoGrainInvert) and injection (in "
                       "VideoGrainSampler).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5-family model, before VideoGrainInvert and "
                                           "VideoGrainApplySTLayout."}),
            "inject_step": ("INT", {"default": 5, "min": 0, "max": 999, "tooltip": (
                "Editing steps that get the recorded features (0 = off). The authors advise 5–10; more keeps "
                "more of the source and can hold back multi-region edits. Must be below the steps.")}),
            "negative": ("CONDITIONING", {"tooltip": (
                "The negative conditioning you give VideoGrainSampler (official: the empty prompt, with the "
                "same ControlNet). The inversion runs it as an extra unconditional pass in the recorded steps "
                "(its result is discarded, the inversion stays guidance 1) to record the uncond half.")}),
        }}

    def apply(self, model, inject_step, negative):
        check_sd15(model, PNP_NODE)
        if not isinstance(negative, list) or not negative:
            raise VideoGrainInputError(PNP_NODE, "negative", "this is not a CONDITIONING",
                                       "connect the negative conditioning that goes to VideoGrainSampler")
        if int(inject_step) < 0:
            raise VideoGrainInputError(PNP_NODE, "inject_step", f"inject_step is {inject_step}",
                                       "use 0 (off) or a positive number of steps (advised 5–10)")
        return (pnp_clone(model, PnPSettings(int(inject_step), negative)),)


NODE_CLASS_MAPPINGS = {PNP_NODE: VideoGrainPnP}
NODE_DISPLAY_NAME_MAPPINGS = {PNP_NODE: "VideoGrain PnP Injection"}
