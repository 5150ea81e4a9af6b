"""Motion nodes: optical flow without weights, trajectory attention on the model, Warp-Err (docs/design.md §10)."""
from __future__ import annotations

from ..motion.flow import DIS_PRESETS, METHODS, FlowError, VideoFlow, clip_flow, flow_to_rgb
from ..motion.trajectories import LAYOUTS, TrajectoryError, build_trajectories
from ..motion.warp_error import ERRORS, REGIONS, source_flows, warp_error
from .errors import VideoGrainInputError
from .model_patch import RESOLUTIONS, TRAJECTORY_NODE, check_sd15, trajectories_clone, trajectory_grids

FLOW_NODE = "VideoGrainOpticalFlow"
WARP_NODE = "VideoGrainWarpError"


class VideoGrainOpticalFlow:
    DESCRIPTION = ("Forward optical flow between consecutive frames, computed with OpenCV on the frames in memory "
                   "(no weights, no download, no re-encode). Feed the frames that are VAE-encoded for the edit, "
                   "at the same size. The VIDEOGRAIN_FLOW holds a float32 tensor [frames-1, height, width, 2] in "
                   "pixels: flow[t] maps frame t to t+1, channel 0 = x (column) shift, channel 1 = y (row) shift.")
    CATEGORY = "VideoGrain/motion"
    FUNCTION = "compute"
    RETURN_TYPES = ("VIDEOGRAIN_FLOW", "IMAGE")
    RETURN_NAMES = ("flow", "preview")
    OUTPUT_TOOLTIPS = ("The forward flow of the clip, for VideoGrainTrajectoryAttention.",
                       "The flow as colour, one image per frame pair (frames-1): hue = direction, brightness = "
                       "speed (black = still), one scale for the whole clip.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The source frames (at least 2), at the size that is VAE-encoded."}),
            "method": (list(METHODS), {"default": "dis", "tooltip":
                       "dis: OpenCV's DIS optical flow (fast, good on large motion); farneback: dense "
                       "polynomial-expansion flow (smoother, slower)."}),
            "dis_preset": (list(DIS_PRESETS), {"default": "medium", "tooltip":
                           "DIS quality preset (ignored by farneback): medium is the most accurate."}),
        }}

    def compute(self, images, method, dis_preset):
        try:
            flow = clip_flow(images[..., :3], method, dis_preset)
        except FlowError as exc:
            raise VideoGrainInputError(FLOW_NODE, "images" if "frames" in str(exc) else "method", str(exc),
                                       "connect a clip of at least 2 frames and pick a listed method") from exc
        return (flow, flow_to_rgb(flow.forward))


class VideoGrainTrajectoryAttention:
    DESCRIPTION = ("Adds the official FLATTEN-style trajectory attention to a clone of MODEL: at the chosen "
                   "resolutions every token's self-attention output is re-attended along its optical-flow "
                   "trajectory (itself and the points it flows to in the other frames), which reduces flicker. "
                   "Runs in VideoGrainInvert and VideoGrainSampler (put it on the model both get), after the "
                   "space-time / windowed / ST-Layout self-attention. At most one key per frame per token.")
    CATEGORY = "VideoGrain/motion"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "STRING")
    RETURN_NAMES = ("model", "report")
    OUTPUT_TOOLTIPS = ("A clone of the model with trajectory attention at the chosen resolutions.",
                       "Per token grid: its size, how many trajectories and how long they are.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5-family model, before VideoGrainInvert and VideoGrainApplySTLayout."}),
            "flow": ("VIDEOGRAIN_FLOW", {"tooltip": "The source clip's flow from VideoGrainOpticalFlow (same frames, "
                                                    "same size as the encoded latent)."}),
            "resolutions": (list(RESOLUTIONS), {"default": "64", "tooltip":
                            "UNet levels with trajectory attention, named as at 512×512 (64 = the highest level, "
                            "latent size; 32 and 16 the next two), for any frame size. Official: 64."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "tooltip":
                     "Picks which trajectory keeps a cell when two flow into the same one (deterministic)."}),
            "slot_layout": (list(LAYOUTS), {"default": "chain", "tooltip":
                            "chain: each token attends to itself and its whole trajectory (recommended); official: "
                            "the slots the research code actually reads (its 'last F-1 slots' quirk, for "
                            "comparisons)."}),
        }}

    def apply(self, model, flow, resolutions, seed, slot_layout):
        node = TRAJECTORY_NODE
        check_sd15(model, node)
        if not isinstance(flow, VideoFlow):
            raise VideoGrainInputError(node, "flow", "this is not a VIDEOGRAIN_FLOW",
                                       "connect the flow output of VideoGrainOpticalFlow")
        if resolutions not in RESOLUTIONS:
            raise VideoGrainInputError(node, "resolutions", f"the model has no trajectory level {resolutions!r}",
                                       f"pick one of {', '.join(RESOLUTIONS)}")
        if slot_layout not in LAYOUTS:
            raise VideoGrainInputError(node, "slot_layout", f"unknown layout {slot_layout!r}",
                                       f"pick one of {', '.join(LAYOUTS)}")
        height, width = flow.image_size
        if height < 8 or width < 8:
            raise VideoGrainInputError(node, "flow", f"the flow's frames are {width}x{height}, smaller than one "
                                       "latent cell (8 pixels)", "compute the flow on the frames that are encoded")
        grids = trajectory_grids(flow.image_size, resolutions)
        try:
            trajectories = build_trajectories(flow.forward, flow.image_size, grids, seed, slot_layout)
        except TrajectoryError as exc:
            raise VideoGrainInputError(node, "flow", str(exc), "connect the flow output of VideoGrainOpticalFlow") \
                from exc
        return (trajectories_clone(model, trajectories), _report(trajectories))


def _report(trajectories) -> str:
    lines = []
    for (h, w), traj in trajectories.items():
        chains = int(traj.chain.max()) + 1
        lines.append(f"{h}x{w}: {traj.frames} frames, {chains} trajectories for {traj.tokens} tokens "
                     f"(mean length {traj.tokens / chains:.2f}, longest {traj.longest}), {traj.span} slots per token")
    return "\n".join(lines)


class VideoGrainWarpError:
    DESCRIPTION = ("Warp-Err, the paper's temporal-consistency metric (lower = less flicker): each edited frame "
                   "t+1 is warped onto frame t along the SOURCE clip's optical flow (OpenCV, computed here) and "
                   "compared with frame t over the pixels visible in both (forward-backward check), optionally "
                   "only inside or outside a region mask. Default units: mean squared error of 0..1 values "
                   "× 1000, the usual reading of the paper's Table 1 (VideoGrain 1.42).")
    CATEGORY = "VideoGrain/motion"
    FUNCTION = "measure"
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("warp_error", "summary")
    OUTPUT_TOOLTIPS = ("The clip's Warp-Err (mean over the frame pairs).",
                       "The clip value, the value of every frame pair and how many pixels each counted.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "The edited frames (decoded), same count and size as the source."}),
            "source": ("IMAGE", {"tooltip": "The source frames the edit was made from: their flow is the reference."}),
            "region": (list(REGIONS), {"default": "all", "tooltip":
                       "all pixels, or only inside / outside the mask (needs the mask input)."}),
            "method": (list(METHODS), {"default": "dis", "tooltip": "Optical flow of the source (OpenCV)."}),
            "error": (list(ERRORS), {"default": "squared", "tooltip":
                      "squared: mean squared error × scale (Lai et al. 2018); absolute: mean absolute error × scale."}),
            "scale": ("FLOAT", {"default": 1000.0, "min": 0.001, "max": 1e6, "step": 1.0,
                                "tooltip": "Multiplier of the reported value (1000 = ×10⁻³ units)."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Region mask per frame [frames, height, width] (or one for all frames)."}),
        }}

    def measure(self, images, source, region, method, error, scale, mask=None):
        node = WARP_NODE
        if images.shape[:3] != source.shape[:3]:
            raise VideoGrainInputError(node, "images", f"the edit is {images.shape[0]} frames of "
                                       f"{images.shape[2]}x{images.shape[1]} but the source is {source.shape[0]} of "
                                       f"{source.shape[2]}x{source.shape[1]}",
                                       "connect the decoded edit of these source frames (same count and size)")
        if images.shape[0] < 2:
            raise VideoGrainInputError(node, "images", "Warp-Err needs at least 2 frames", "connect a longer clip")
        if region != "all" and mask is None:
            raise VideoGrainInputError(node, "mask", f"region {region!r} needs a mask", "connect a MASK or set region to all")
        if mask is not None and region != "all":
            if mask.ndim == 2:
                mask = mask[None]
            if mask.shape[0] == 1:
                mask = mask.expand(images.shape[0], -1, -1)
            if tuple(mask.shape) != tuple(images.shape[:3]):
                raise VideoGrainInputError(node, "mask", f"the mask is {list(mask.shape)} but the clip is "
                                           f"{list(images.shape[:3])} (frames, height, width)",
                                           "give one mask per frame at the clip's size (VideoGrainLoadMasks at this size)")
        try:
            forward, backward = source_flows(source[..., :3], method)
            result = warp_error(images[..., :3], forward, backward, mask if region != "all" else None, region,
                                error, scale)
        except FlowError as exc:
            raise VideoGrainInputError(node, "images", str(exc), "connect RGB frames of the same clip") from exc
        pairs = ", ".join(f"{v:.3f}" for v in result.per_frame)
        summary = (f"Warp-Err ({error}, ×{scale:g}, region {region}): {result.value:.4f}\n"
                   f"per frame pair: {pairs}\npixels counted: {', '.join(map(str, result.pixels))}")
        return (float(result.value), summary)


NODE_CLASS_MAPPINGS = {FLOW_NODE: VideoGrainOpticalFlow, TRAJECTORY_NODE: VideoGrainTrajectoryAttention,
                       WARP_NODE: VideoGrainWarpError}
NODE_DISPLAY_NAME_MAPPINGS = {FLOW_NODE: "VideoGrain Optical Flow", TRAJECTORY_NODE: "VideoGrain Trajectory Attention",
                              WARP_NODE: "VideoGrain Warp Error"}
