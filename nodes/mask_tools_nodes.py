"""Mask tools: any MASK aligned with the frames, boxes to masks, mask operations, and the mask check.

Thin glue over `masks.normalize`, `masks.boxes`, `masks.ops`, `masks.check` and `masks.annotate`
(docs/design.md §18). `VIDEOGRAIN_MASKS` is the ordered `{name: MASK [F, H, W]}` of VideoGrainLoadMasks.
"""
from __future__ import annotations

import torch

from ..masks import ops
from ..masks.annotate import annotated_overlay
from ..masks.boxes import BoxesError, boxes_to_masks
from ..masks.check import coverage_plot, coverage_table, coverage_text, mask_warnings
from ..masks.downsample import DEFAULT_RULE, RULES
from ..masks.geometry import SIZE_MODES
from ..masks.layout import latent_size_of
from ..masks.load import MaskLoadError, plan_masks
from ..masks.normalize import MaskShapeError, align_mask
from ..masks.preview import label_image
from .errors import VideoGrainInputError
from .mask_nodes import MASKS_TYPE, check_region_masks, frames_size, masks_for_frames
from .notify import warn

ALIGN, BOXES, OPS, CHECK = "VideoGrainAlignMask", "VideoGrainBoxesToMasks", "VideoGrainMaskOps", "VideoGrainMaskCheck"
CATEGORY = "VideoGrain/masks"
OPERATIONS = ("grow", "shrink", "feather", "fill_holes", "remove_specks", "temporal_median",
              "union", "intersection", "difference", "complement")
_PAIRWISE = ("union", "intersection", "difference")
def _source(source_width, source_height) -> tuple[int, int] | None:
    return (int(source_width), int(source_height)) if source_width and source_height else None


_SOURCE_INPUTS = {
    "source_width": ("INT", {"forceInput": True, "tooltip": "The video's own width (VideoGrainLoadVideo's "
                             "source_width): lets the node check the mask's aspect ratio under crop and pad."}),
    "source_height": ("INT", {"forceInput": True, "tooltip": "The video's own height (VideoGrainLoadVideo's "
                              "source_height)."}),
}


class VideoGrainAlignMask:
    DESCRIPTION = ("Makes any MASK a region mask for these frames: a single-frame mask is used on every frame, a "
                   "mask of another size is taken to frame the source video and goes through the frames' sizing "
                   "rule (keep_aspect, crop or pad, nearest), and soft masks become 0/1 at the threshold. Works with "
                   "core mask nodes, the mask editor (LoadImage's MASK), segmentation packs and alpha channels. "
                   "Place it before VideoGrainRegion.")
    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("The mask [frames, height, width] at the frames' size, 1 inside, 0 outside.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The loaded frames the mask must line up with (their frame count "
                                                "and size)."}),
                "mask": ("MASK", {"tooltip": "Any MASK: one frame or one per frame, at the frames' size or the "
                                             "source video's."}),
                "size_mode": (list(SIZE_MODES), {"default": "keep_aspect", "tooltip":
                              "The size_mode the video loader used, so a mask at the source's size lands where "
                              "the frames' pixels did."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                              "A pixel is inside when its value is above this (soft or feathered masks become "
                              "0/1 here); 0 counts any non-zero pixel."}),
            },
            "optional": dict(_SOURCE_INPUTS),
        }

    def align(self, images, mask, size_mode, threshold, source_width=None, source_height=None):
        frames, h, w = frames_size(ALIGN, images)
        if not isinstance(mask, torch.Tensor):
            raise VideoGrainInputError(ALIGN, "mask", f"expected a MASK, got {type(mask).__name__}",
                                       "connect a MASK output")
        try:
            out = align_mask(mask, frames, h, w, size_mode, threshold, _source(source_width, source_height))
        except MaskShapeError as err:
            raise VideoGrainInputError(ALIGN, err.input_name, err.problem, err.fix) from err
        return (out.to(images.device),)


class VideoGrainBoxesToMasks:
    DESCRIPTION = ("Region masks from boxes with keyframes, written as JSON: "
                   '{"cat": {"0": [x0, y0, x1, y1], "15": [...]}, "sky": [0, 0, 512, 100]} — per region, boxes '
                   "at keyframes (linearly interpolated between them, held before the first and after the last) "
                   'or one box for every frame; in pixels of the frames or fractions 0..1 ("units": "pixels" / '
                   '"fraction"). With source_width/source_height the boxes are in the source video\'s pixels and '
                   "follow the frames' size_mode.")
    CATEGORY = CATEGORY
    FUNCTION = "make"
    RETURN_TYPES = (MASKS_TYPE, "STRING", "IMAGE")
    RETURN_NAMES = ("region_masks", "names", "combined")
    OUTPUT_TOOLTIPS = ("Every region's MASK [frames, height, width] by name, in the JSON's order.",
                       "The region names, comma-separated, in order.",
                       "A colour preview: each region in its own colour on black.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The loaded frames (their frame count and size)."}),
                "boxes": ("STRING", {"multiline": True, "default": '{"region_1": {"0": [0.1, 0.2, 0.4, 0.9]}}',
                                     "tooltip": "JSON: {region: {frame: [x0, y0, x1, y1], ...} or [x0, y0, x1, y1]}; "
                                                "frames are 0-based indices of the loaded frames."}),
                "size_mode": (list(SIZE_MODES), {"default": "keep_aspect", "tooltip":
                              "The video loader's size_mode; used only with source_width/source_height."}),
            },
            "optional": dict(_SOURCE_INPUTS),
        }

    def make(self, images, boxes, size_mode, source_width=None, source_height=None):
        frames, h, w = frames_size(BOXES, images)
        source = _source(source_width, source_height)
        try:
            plan = plan_masks(source[0], source[1], size_mode, w, h) if source else None
            masks = boxes_to_masks(boxes, frames, h, w, plan)
        except BoxesError as err:
            raise VideoGrainInputError(BOXES, err.input_name, err.problem, err.fix) from err
        except MaskLoadError as err:
            raise VideoGrainInputError(BOXES, "size_mode", err.problem, err.fix) from err
        if not masks:
            raise VideoGrainInputError(BOXES, "boxes", "the JSON names no region",
                                       'add at least one region, e.g. {"cat": [10, 20, 110, 220]}')
        masks = {name: m.to(images.device) for name, m in masks.items()}
        return (masks, ", ".join(masks), label_image(masks))


class VideoGrainMaskOps:
    DESCRIPTION = ("One mask operation: grow / shrink by 'amount' pixels (disk), feather (soft edge of 'amount' "
                   "px), fill_holes (holes up to 'amount' px, 0 = any), remove_specks (pieces under 'amount' px), "
                   "temporal_median (over 'amount' frames, odd), union / intersection / difference with 'other', "
                   "or complement: everything that no mask in region_masks (and 'mask', if given) covers — the "
                   "background region.")
    CATEGORY = CATEGORY
    FUNCTION = "apply"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("The resulting MASK [frames, height, width].",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "operation": (list(OPERATIONS), {"default": "grow", "tooltip": "What to do (see the description)."}),
                "amount": ("INT", {"default": 4, "min": 0, "max": 4096, "tooltip":
                           "Pixels for grow/shrink/feather, an area in pixels for fill_holes/remove_specks, frames "
                           "for temporal_median; unused by union/intersection/difference/complement."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "The mask to change (every operation but complement needs it)."}),
                "other": ("MASK", {"tooltip": "The second mask of union, intersection and difference (mask − other)."}),
                "region_masks": (MASKS_TYPE, {"tooltip": "complement: the regions whose union is subtracted from "
                                                         "the whole frame."}),
            },
        }

    def apply(self, operation, amount, mask=None, other=None, region_masks=None):
        if operation not in OPERATIONS:
            raise VideoGrainInputError(OPS, "operation", f"unknown operation {operation!r}",
                                       f"pick one of {', '.join(OPERATIONS)}")
        if operation == "complement":
            parts = list(check_region_masks(OPS, region_masks).values()) if region_masks else []
            parts += [mask] if mask is not None else []
            if not parts:
                raise VideoGrainInputError(OPS, "region_masks", "complement got no mask",
                                           "connect region_masks (or mask) with the regions to leave out")
            return (self._call(ops.complement, "region_masks", parts),)
        if mask is None:
            raise VideoGrainInputError(OPS, "mask", f"{operation} needs a mask", "connect a MASK to 'mask'")
        if operation in _PAIRWISE:
            if other is None:
                raise VideoGrainInputError(OPS, "other", f"{operation} needs a second mask", "connect a MASK to 'other'")
            return (self._call(getattr(ops, operation), "other", mask, other),)
        if operation == "temporal_median" and (amount < 1 or amount % 2 == 0):
            raise VideoGrainInputError(OPS, "amount", f"temporal_median needs an odd window, got {amount}",
                                       "use 1, 3, 5, … frames")
        calls = {"grow": lambda m: ops.grow(m, amount), "shrink": lambda m: ops.shrink(m, amount),
                 "feather": lambda m: ops.feather(m, amount),
                 "fill_holes": lambda m: ops.fill_holes(m, amount or None),
                 "remove_specks": lambda m: ops.remove_specks(m, amount),
                 "temporal_median": lambda m: ops.temporal_median(m, amount)}
        return (self._call(calls[operation], "mask", mask),)

    @staticmethod
    def _call(fn, input_name: str, *args):
        try:
            return fn(*args)
        except ValueError as err:
            raise VideoGrainInputError(OPS, input_name, str(err),
                                       "give masks of the same height and width, with the same frame count or one "
                                       "frame, e.g. aligned by VideoGrainAlignMask") from err


class VideoGrainMaskCheck:
    DESCRIPTION = ("Checks region masks before any GPU time: an overlay video (each region tinted in its colour, "
                   "its name, the frame number), a per-region, per-frame coverage table and plot, and warnings (in "
                   "the UI and the server log) about regions empty in some frames or vanishing mid-clip, overlaps "
                   "that are not a part inside its instance, regions smaller than one attention token at the "
                   "smallest modulated resolution, and pixels in no region under the background lock. Warnings "
                   "never stop the run.")
    CATEGORY = CATEGORY
    FUNCTION = "check"
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("overlay", "coverage", "plot", "warnings")
    OUTPUT_TOOLTIPS = ("The frames with every region tinted, outlined and named, and the frame number.",
                       "Coverage table: the share of each frame in each region and in none, in percent.",
                       "The coverage over frames as a line plot, one line per region.",
                       "The warnings, one per line (empty when all is well).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames the masks belong to."}),
            "region_masks": (MASKS_TYPE, {"tooltip": "The region masks to check."}),
            "downsample": (list(RULES), {"default": DEFAULT_RULE, "tooltip":
                           "The downsampling rule the layout will use (VideoGrainLayout's downsample): decides "
                           "which regions keep a token at the smallest attention grid."}),
            "background_lock": ("BOOLEAN", {"default": True, "tooltip":
                                "Whether the sampler keeps pixels outside every region from the source "
                                "(background source_noise / inversion_path): warns when pixels are in no region."}),
        }}

    def check(self, images, region_masks, downsample, background_lock):
        masks, (frames, h, w) = masks_for_frames(CHECK, images, region_masks)
        if downsample not in RULES:
            raise VideoGrainInputError(CHECK, "downsample", f"unknown rule {downsample!r}",
                                       f"pick one of {', '.join(RULES)}")
        masks = {name: m.float().cpu() for name, m in masks.items()}
        cov = coverage_table(masks)
        warnings = mask_warnings(masks, latent_size_of(h, w), background_lock=bool(background_lock), rule=downsample)
        for message in warnings:
            warn(CHECK, message)
        text = coverage_text(cov)
        return {"ui": {"text": [text]},
                "result": (annotated_overlay(images.float().cpu(), masks), text, coverage_plot(cov),
                           "\n".join(warnings))}


NODE_CLASS_MAPPINGS = {ALIGN: VideoGrainAlignMask, BOXES: VideoGrainBoxesToMasks, OPS: VideoGrainMaskOps,
                       CHECK: VideoGrainMaskCheck}
NODE_DISPLAY_NAME_MAPPINGS = {ALIGN: "VideoGrain Align Mask", BOXES: "VideoGrain Boxes to Masks",
                              OPS: "VideoGrain Mask Ops", CHECK: "VideoGrain Mask Check"}
