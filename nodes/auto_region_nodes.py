"""VideoGrainAutoRegions: region masks from the model's own self-attention, with no segmentation model
(docs/design.md §10 "Automatic masks by clustering", §18).

A short DDIM inversion (VideoGrainInvert's loop and schedule, guidance 1) runs on a space-time clone
whose attn1 at the latent/2 blocks records each frame's diagonal block of the full space-time map
(`attention.frame_blocks`); the averaged affinity is clustered per frame, labels are matched across
frames and become masks at the frames' size (`masks.clusters`).
"""
from __future__ import annotations

import time

import torch


from ..attention.frame_blocks import FrameBlockRecordingAttention
from ..masks.clusters import ClusterError, regions_from_affinity
from ..masks.layout import attention_sizes
from ..masks.preview import overlay
from .errors import VideoGrainInputError
from .inversion_nodes import _latent_samples, inversion_schedule, run_inversion
from .mask_nodes import MASKS_TYPE, frames_size
from .model_patch import check_sd15, check_windows, remove_pnp, spacetime_clone

AUTO = "VideoGrainAutoRegions"
# SD1.5's transformer blocks at latent/2 (the 32×32 level of a 512² input): docs/design.md §10.
RECORDED_BLOCKS = (("input", 4), ("input", 5), ("output", 6), ("output", 7), ("output", 8))


def recording_clone(model, node: str = AUTO):
    """(space-time clone with the recording patch at RECORDED_BLOCKS, the patch). PnP is taken off: the
    short inversion only feeds the recording, and its patch does not hand q/k to a PnP session."""
    work = spacetime_clone(model, node)
    remove_pnp(work)
    patch = FrameBlockRecordingAttention()
    for block_name, number in RECORDED_BLOCKS:
        work.set_model_attn1_replace(patch, block_name, number)
    return work, patch


def short_inversion(work, positive, samples: torch.Tensor, steps: int) -> None:
    """Run VideoGrainInvert's DDIM inversion (guidance 1, core's ddim_uniform σ) for its attention calls
    only; the inverted latent is not needed."""
    sigmas = inversion_schedule(work.get_model_object("model_sampling"), steps)
    if len(sigmas) < 3:  # the inversion calls the UNet len(sigmas) − 2 times
        raise VideoGrainInputError(AUTO, "steps", f"steps={steps} gives no UNet call to record",
                                   "use at least 2 steps (10 is quick, 50 is the official inversion)")
    run_inversion(work, positive, samples, sigmas, steps, AUTO)


def summary(names: list[str], masks: torch.Tensor, grid: tuple[int, int], steps: int, calls: int,
            fused: bool | None, seconds: float) -> str:
    """One line on how the regions were made, then each region's share of the pixels over all frames."""
    head = (f"automatic regions: {len(names)} clusters of the {grid[1]}x{grid[0]} self-attention "
            f"({len(RECORDED_BLOCKS)} blocks, {steps}-step inversion, {calls} branch calls averaged, "
            f"{'fused' if fused else 'chunked'} log-sum-exp, {seconds:.1f} s)")
    shares = [f"{n}: {100 * float(m.mean()):.1f}% of the pixels" for n, m in zip(names, masks)]
    return "\n".join([head] + shares)


class VideoGrainAutoRegions:
    DESCRIPTION = ("Finds K regions without a segmentation model: a short DDIM inversion of the clip records the "
                   "model's space-time self-attention at the 32×32-equivalent layers (each frame's own block of "
                   "the full map, averaged over heads, layers and steps), clusters each frame's attention rows "
                   "with seeded k-means, matches the clusters frame to frame and returns K masks at the frames' "
                   "size. Names are region_1 … region_K, largest first in frame 0 (usually the background); "
                   "check them with VideoGrainMaskCheck and pick regions with VideoGrainSelectMask.")
    CATEGORY = "VideoGrain/masks"
    FUNCTION = "find"
    RETURN_TYPES = (MASKS_TYPE, "IMAGE", "STRING")
    RETURN_NAMES = ("region_masks", "preview", "summary")
    OUTPUT_TOOLTIPS = ("Every cluster's MASK [frames, height, width] by name (region_1 … region_K).",
                       "The frames with each cluster tinted in its colour.",
                       "How the clusters were made and each one's share of the pixels.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 model; the inversion runs it unmodulated, on a clone."}),
                "positive": ("CONDITIONING", {"tooltip": "The SOURCE prompt describing the clip (may be empty)."}),
                "latent": ("LATENT", {"tooltip": "The source frames encoded with core VAEEncode."}),
                "images": ("IMAGE", {"tooltip": "The same frames, decoded: the masks and preview are made at "
                                                "their size."}),
                "steps": ("INT", {"default": 10, "min": 2, "max": 1000, "tooltip":
                          "Inversion steps recorded. 10 is quick and usually enough for clustering; the "
                          "official inversion (and paper's clustering) uses 50. Independent of the edit's steps."}),
                "k": ("INT", {"default": 3, "min": 1, "max": 64, "tooltip":
                      "How many regions to find (e.g. 3: two objects and the background)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                         "Seeds k-means (k-means++ starts, best of 10)."}),
            },
        }

    def find(self, model, positive, latent, images, steps, k, seed):
        check_sd15(model, AUTO)
        samples = _latent_samples(latent, AUTO, model)
        if samples.shape[0] == 0:
            raise VideoGrainInputError(AUTO, "latent", "the latent has no frames", "encode at least one frame")
        frames, _, lh, lw = samples.shape
        image_frames, h, w = frames_size(AUTO, images)
        if image_frames != frames:
            raise VideoGrainInputError(AUTO, "images", f"{image_frames} frames but the latent has {frames}",
                                       "give the frames that were encoded into the latent")
        grid = attention_sizes((lh, lw))[1]  # the latent/2 level the patch records
        tokens = grid[0] * grid[1]
        if not 1 <= k <= tokens:
            raise VideoGrainInputError(AUTO, "k", f"{k} clusters asked for, but a frame has only {tokens} tokens "
                                       f"({grid[1]}x{grid[0]}) at the recorded level",
                                       f"use 1 to {tokens} clusters, or encode larger frames")
        check_windows(model, frames)
        work, patch = recording_clone(model)
        start = time.perf_counter()
        short_inversion(work, positive, samples, steps)
        acc = patch.accumulator
        if acc is None or acc.calls == 0:
            raise VideoGrainInputError(AUTO, "model", f"the recording patch never ran at {list(RECORDED_BLOCKS)}",
                                       "use an SD1.5-family model whose UNet ComfyUI tags with SD1.5's block keys")
        try:
            masks = regions_from_affinity(acc.mean(), (acc.h, acc.w), k, h, w, seed)  # [K, F, H, W]
        except ClusterError as err:
            raise VideoGrainInputError(AUTO, "k", str(err), "use fewer clusters") from err
        seconds = time.perf_counter() - start
        names = [f"region_{j + 1}" for j in range(k)]
        region_masks = {n: m.to(images.device) for n, m in zip(names, masks)}
        preview = overlay(images.float().cpu(), {n: m for n, m in zip(names, masks)}, 0.5)
        return (region_masks, preview, summary(names, masks, (acc.h, acc.w), steps, acc.calls, acc.fused, seconds))


NODE_CLASS_MAPPINGS = {AUTO: VideoGrainAutoRegions}
NODE_DISPLAY_NAME_MAPPINGS = {AUTO: "VideoGrain Auto Regions"}
