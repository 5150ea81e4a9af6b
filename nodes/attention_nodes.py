"""Nodes for ST-Layout Attn: patching the model, and showing where each prompt attended."""
from __future__ import annotations

import torch

from ..attention.settings import STLayoutSettings
from ..masks.preview import heat_colours
from .errors import VideoGrainInputError
from ..attention.windows import TemporalWindows, WindowError
from .model_patch import LEVELS, WINDOWS_NODE, check_sd15, stlayout_clone, windows_clone


class VideoGrainApplySTLayout:
    DESCRIPTION = ("Patches a clone of MODEL with VideoGrain's ST-Layout Attn: full space-time self-attention "
                   "over all frames, and, in the first steps, cross- and self-attention scores reshaped by the "
                   "region layout so each local prompt lands in its own region. The input MODEL is not changed.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A patched clone of the model; feed it to VideoGrainSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5-family model (LoRAs applied upstream are kept)."}),
            "layout": ("VIDEOGRAIN_LAYOUT", {"tooltip": "The region layout from VideoGrainLayout."}),
            "cross_strength": ("FLOAT", {"default": 1.0, "min": -2.0, "max": 2.0, "step": 0.05, "tooltip":
                               "λ_cross: how hard each region's pixels are pulled to its own prompt's tokens "
                               "(1.0 official; 0 turns cross-attention modulation off)."}),
            "self_strength": ("FLOAT", {"default": 0.3, "min": -2.0, "max": 2.0, "step": 0.05, "tooltip":
                              "λ_self: how hard tokens are pulled to tokens of their own region across frames "
                              "and pushed from other regions (0.3 official; 0 turns it off)."}),
            "modulated_fraction": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                                   "Fraction of the editing steps, from the start, that are modulated "
                                   "(0.3 = steps 0–14 of 50, official)."}),
            "levels": (list(LEVELS), {"default": "below_highest", "tooltip":
                       "Which UNet levels are modulated: every level except the highest resolution "
                       "(official), or all of them (slower, more memory)."}),
            "cross_branch": (["cond", "both"], {"default": "cond",
                             "tooltip": "CFG branch whose cross-attention is modulated (official: cond)."}),
            "self_branch": (["uncond", "cond", "both"], {"default": "uncond", "tooltip":
                            "CFG branch whose self-attention is modulated (official: uncond, a side effect of "
                            "the research code's slicing; try 'both' with real weights)."}),
        }}

    def apply(self, model, layout, cross_strength, self_strength, modulated_fraction, levels,
              cross_branch, self_branch):
        node = "VideoGrainApplySTLayout"
        check_sd15(model, node)
        if levels not in LEVELS:
            raise VideoGrainInputError(node, "levels", f"unknown value {levels!r}", f"pick one of {list(LEVELS)}")
        settings = STLayoutSettings(cross_strength, self_strength, modulated_fraction, cross_branch, self_branch)
        if layout.num_regions == 0:
            # No regions = a global edit: nothing to modulate and nothing to blend (docs/design.md quirk 17).
            return (model.clone(),)
        return (stlayout_clone(model, layout, settings, levels, node),)


class VideoGrainAttentionMaps:
    DESCRIPTION = ("Heatmaps of each region prompt's cross-attention over the frames, recorded by "
                   "VideoGrainSampler during the edit: shows where a prompt landed and where it leaked.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("heatmaps", "regions")
    OUTPUT_TOOLTIPS = ("Region after region, one heatmap per frame (F frames per region).",
                       "Region names in the order of the heatmaps, one per line, with the share of the "
                       "prompt's attention that fell inside its own mask.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "attention": ("VIDEOGRAIN_ATTENTION", {"tooltip": "The attention output of VideoGrainSampler."}),
            "steps": (["modulated", "all"], {"default": "modulated", "tooltip":
                      "Average over the modulated steps only, or over every step of the edit."}),
        }, "optional": {
            "images": ("IMAGE", {"tooltip": "Frames to draw the heatmaps over (the edit or the source)."}),
        }}

    def render(self, attention, steps, images=None):
        node = "VideoGrainAttentionMaps"
        maps = attention.window if steps == "modulated" else attention.all_steps
        k, f, h, w = maps.shape
        if k == 0:
            raise VideoGrainInputError(node, "attention", "the sampler recorded no regions",
                                       "sample with a model from VideoGrainApplySTLayout")
        norm = maps / maps.flatten(2).amax(-1).clamp_min(1e-12)[..., None, None]
        size = (images.shape[1], images.shape[2]) if images is not None else (h * 8, w * 8)
        if images is not None and images.shape[0] != f:
            raise VideoGrainInputError(node, "images", f"{images.shape[0]} frames given, the edit has {f}",
                                       "connect the frames of the same clip")
        up = torch.nn.functional.interpolate(norm.reshape(k * f, 1, h, w), size=size, mode="bilinear",
                                             align_corners=False)[:, 0]
        heat = heat_colours(up)
        if images is not None:
            heat = 0.45 * images[..., :3].repeat(k, 1, 1, 1).cpu() + 0.55 * heat
        shares = attention.inside_share(steps)
        lines = [f"{name}: {100 * float(share):.1f}% inside its mask" for name, share in zip(attention.names, shares)]
        return (heat.clamp(0, 1).float(), "\n".join(lines))


class VideoGrainTemporalWindows:
    DESCRIPTION = ("Long clips: runs the space-time self-attention over overlapping windows of frames instead of "
                   "the whole clip, so time and memory grow linearly with the frame count. Every window also "
                   "attends to a few anchor frames shared by all windows (modulated like its own frames), so "
                   "identity and colours agree across windows; overlapping outputs are blended. Put it on the "
                   "model that goes to both VideoGrainInvert and VideoGrainApplySTLayout. A window of at least "
                   "the clip's length is exactly full attention.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("A clone of the model with windowed space-time self-attention.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5-family model, before VideoGrainInvert and VideoGrainApplySTLayout."}),
            "window": ("INT", {"default": 16, "min": 2, "max": 4096, "tooltip":
                       "Frames per window (16 is what the paper edits at once; the clip's length or more = full "
                       "attention)."}),
            "overlap": ("INT", {"default": 4, "min": 0, "max": 4095, "tooltip":
                        "Frames shared by neighbouring windows, blended with ramps (less than window)."}),
            "anchors": ("INT", {"default": 2, "min": 0, "max": 64, "tooltip":
                        "Frames spread over the clip whose keys every window also attends to (0 = none)."}),
        }}

    def apply(self, model, window, overlap, anchors):
        check_sd15(model, WINDOWS_NODE)
        try:
            windows = TemporalWindows(window, overlap, anchors)
        except WindowError as exc:
            raise VideoGrainInputError(WINDOWS_NODE, exc.input_name, exc.problem, exc.fix) from exc
        return (windows_clone(model, windows),)


NODE_CLASS_MAPPINGS = {
    WINDOWS_NODE: VideoGrainTemporalWindows,
    "VideoGrainApplySTLayout": VideoGrainApplySTLayout,
    "VideoGrainAttentionMaps": VideoGrainAttentionMaps,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    WINDOWS_NODE: "VideoGrain Temporal Windows",
    "VideoGrainApplySTLayout": "VideoGrain ST-Layout Attn",
    "VideoGrainAttentionMaps": "VideoGrain Attention Maps",
}
