"""Region mask nodes: load masks aligned with the frames, pick one region, and draw them for checking.

`VIDEOGRAIN_MASKS` is an ordered dict `{region name: MASK [F, H, W] float 0/1}`.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..masks.geometry import SIZE_MODES
from ..masks.load import MaskLoadError, load_region_masks
from ..masks.preview import label_image, overlay
from ..media.selection import FrameSelection, SelectionError
from .errors import VideoGrainInputError
from .utils import PathNotAllowed, fingerprint, resolve_free_path

MASKS_TYPE = "VIDEOGRAIN_MASKS"
LOAD_MASKS = "VideoGrainLoadMasks"


def resolve_masks_path(masks_path: str) -> Path:
    """An absolute path as given; a relative one inside ComfyUI's input folder (confined on shared servers)."""
    try:
        return Path(resolve_free_path(masks_path))
    except PathNotAllowed as exc:
        raise VideoGrainInputError(LOAD_MASKS, "masks_path", str(exc),
                                   "copy the masks into ComfyUI's input folder and give the path relative to it") \
            from exc


_FRAMES_FIX = "connect the IMAGE output of VideoGrainLoadVideo"


def frames_size(node: str, images) -> tuple[int, int, int]:
    """(frames, height, width) of an IMAGE batch, or an error naming `node`'s 'images' input."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise VideoGrainInputError(node, "images", f"expected frames [F, H, W, C], got {shape}", _FRAMES_FIX)
    return int(images.shape[0]), int(images.shape[1]), int(images.shape[2])


def check_region_masks(node: str, region_masks, input_name: str = "region_masks") -> dict[str, torch.Tensor]:
    """The ordered region masks, or an error when none arrived or their shapes differ."""
    if not isinstance(region_masks, dict) or not region_masks:
        raise VideoGrainInputError(node, input_name, "no region masks arrived",
                                   "connect region_masks from VideoGrainLoadMasks, VideoGrainBoxesToMasks or "
                                   "VideoGrainAutoRegions")
    shapes = {tuple(m.shape) for m in region_masks.values()}
    if len(shapes) != 1:
        raise VideoGrainInputError(node, input_name, f"the region masks have different shapes {sorted(shapes)}",
                                   "make every region from the same frames")
    return region_masks


def masks_for_frames(node: str, images, region_masks) -> tuple[dict[str, torch.Tensor], tuple[int, int, int]]:
    """(the region masks, (frames, height, width)) when the masks are aligned to these frames, else an error."""
    size = frames_size(node, images)
    masks = check_region_masks(node, region_masks)
    shape = tuple(next(iter(masks.values())).shape)
    if shape != size:
        raise VideoGrainInputError(node, "images", f"the frames are {size} (frames, height, width) but the masks "
                                   f"are {shape}", "give the same frames the masks were aligned to")
    return masks, size


class VideoGrainLoadMasks:
    DESCRIPTION = ("Loads region masks and aligns them with the loaded frames: same frame selection, and the same "
                   "resize, crop or pad as the video, so each mask lines up with its frame. Reads a folder with one "
                   "subfolder per region (subfolder name = region name, one image per frame, white = inside), or a "
                   "colour-coded label video or folder of label frames (one flat colour per region, black = none; "
                   "names from an optional colors.txt of 'name: #rrggbb' lines, else region_1, region_2, …).")
    CATEGORY = "VideoGrain/masks"
    FUNCTION = "load"
    RETURN_TYPES = (MASKS_TYPE, "STRING", "IMAGE")
    RETURN_NAMES = ("region_masks", "names", "combined")
    OUTPUT_TOOLTIPS = (
        "Every region's MASK [frames, height, width] by name, in order; pick one with VideoGrainSelectMask.",
        "The region names, comma-separated, in order.",
        "A colour preview: each region in its own colour on black (overlaps averaged).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The loaded frames the masks must line up with (their size and frame count)."}),
                "masks_path": ("STRING", {"default": "videograin_demo/masks", "tooltip":
                               "A folder of region subfolders, a folder of label frames, or a label video; relative "
                               "to ComfyUI's input folder, or an absolute path (a server shared on a network "
                               "confines it to the input, output and temp folders: VIDEOGRAIN_CONFINE_PATHS)."}),
                "size_mode": (list(SIZE_MODES), {"default": "keep_aspect", "tooltip":
                              "The size_mode the video loader used: keep_aspect, crop or pad. Must match, or the "
                              "masks will not line up."}),
                "frame_load_cap": ("INT", {"default": 16, "min": 0, "max": 100000, "tooltip":
                                   "Same as the video loader: keep at most this many frames (0 = all)."}),
                "skip_first_frames": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip":
                                      "Same as the video loader: drop this many frames at the start."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000, "tooltip":
                                     "Same as the video loader: keep every nth frame after the skipped ones."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01, "tooltip":
                              "Mask folders only: a pixel is inside a region when its grey value (0..1) is above "
                              "this. 0.5 suits black/white masks and feathered ones; 0 counts any non-black pixel."}),
            },
            "optional": {
                "source_width": ("INT", {"forceInput": True, "tooltip":
                                 "The video's own width (VideoGrainLoadVideo's source_width): lets the node check "
                                 "that the masks have the video's aspect ratio."}),
                "source_height": ("INT", {"forceInput": True, "tooltip":
                                  "The video's own height (VideoGrainLoadVideo's source_height)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, masks_path):
        if masks_path is None:  # wired from another node: checked when it runs
            return True
        if not str(masks_path).strip():
            return str(VideoGrainInputError("VideoGrainLoadMasks", "masks_path", "it is empty",
                                            "give a mask folder or label video inside ComfyUI's input folder"))
        try:
            path = resolve_masks_path(masks_path)
        except VideoGrainInputError as exc:
            return str(exc)
        if not path.exists():
            return str(VideoGrainInputError("VideoGrainLoadMasks", "masks_path", f"{path} does not exist",
                                            "give a folder or label video inside ComfyUI's input folder, "
                                            "or an absolute path"))
        return True

    @classmethod
    def IS_CHANGED(cls, masks_path=None, **_):
        # Re-run when the files change on disk, not only when the path string does.
        if not isinstance(masks_path, str):
            return ""  # wired from another node: its own cache key covers it
        try:
            return fingerprint(str(resolve_masks_path(masks_path)))
        except VideoGrainInputError:
            return "refused"  # validation or the run reports it

    def load(self, images, masks_path, size_mode, frame_load_cap, skip_first_frames, select_every_nth, threshold,
             source_width=None, source_height=None):
        node = "VideoGrainLoadMasks"
        frames, height, width = frames_size(node, images)
        source = (source_width, source_height) if source_width and source_height else None
        try:
            selection = FrameSelection(frame_load_cap, skip_first_frames, select_every_nth)
            masks = load_region_masks(resolve_masks_path(masks_path), frames, width, height, size_mode,
                                      selection, threshold, source)
        except (MaskLoadError, SelectionError) as err:
            raise VideoGrainInputError(node, err.input_name, err.problem, err.fix) from err
        masks = {name: m.to(images.device) for name, m in masks.items()}
        return (masks, ", ".join(masks), label_image(masks))


class VideoGrainSelectMask:
    DESCRIPTION = ("Picks one region's MASK out of VideoGrainLoadMasks' region_masks by name, or the union of "
                   "several names separated by commas (e.g. 'left_figure, right_figure').")
    CATEGORY = "VideoGrain/masks"
    FUNCTION = "select"
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    OUTPUT_TOOLTIPS = ("The region's mask [frames, height, width], 1 inside.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "region_masks": (MASKS_TYPE, {"tooltip": "The region masks from VideoGrainLoadMasks."}),
            "name": ("STRING", {"default": "", "tooltip":
                     "A region name (see VideoGrainLoadMasks' names output), or several separated by commas "
                     "for their union."}),
        }}

    def select(self, region_masks, name):
        node = "VideoGrainSelectMask"
        masks = check_region_masks(node, region_masks)
        wanted = [n.strip() for n in name.split(",") if n.strip()]
        available = ", ".join(masks)
        if not wanted:
            raise VideoGrainInputError(node, "name", "it is empty", f"type one of: {available}")
        unknown = [n for n in wanted if n not in masks]
        if unknown:
            raise VideoGrainInputError(node, "name", f"no region called {', '.join(repr(n) for n in unknown)}",
                                       f"use one of: {available}")
        out = masks[wanted[0]].clone()
        for n in wanted[1:]:
            out = torch.maximum(out, masks[n])
        return (out,)


class VideoGrainMaskOverlay:
    DESCRIPTION = ("Draws the region masks over the frames, each region tinted in its own colour with its outline, "
                   "to check that masks and frames line up. Feed the result to a saver or preview node.")
    CATEGORY = "VideoGrain/masks"
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The frames with every region tinted and outlined.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The frames the masks belong to."}),
            "region_masks": (MASKS_TYPE, {"tooltip": "The region masks from VideoGrainLoadMasks."}),
            "opacity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                  "tooltip": "How strongly each region is tinted (outlines are always drawn)."}),
        }}

    def draw(self, images, region_masks, opacity):
        node = "VideoGrainMaskOverlay"
        masks, _ = masks_for_frames(node, images, region_masks)
        return (overlay(images, masks, opacity),)


NODE_CLASS_MAPPINGS = {
    "VideoGrainLoadMasks": VideoGrainLoadMasks,
    "VideoGrainSelectMask": VideoGrainSelectMask,
    "VideoGrainMaskOverlay": VideoGrainMaskOverlay,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VideoGrainLoadMasks": "VideoGrain Load Masks",
    "VideoGrainSelectMask": "VideoGrain Select Mask",
    "VideoGrainMaskOverlay": "VideoGrain Mask Overlay",
}
