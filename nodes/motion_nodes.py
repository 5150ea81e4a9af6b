"""Motion nodes: optical flow without weights, trajectory attention on the model, Warp-Err (docs/design.md §10)."""
from __future__ import annotations

from ..motion.flow import DIS_PRESETS, METHODS, FlowError, VideoFlow, clip_flow, flow_to_rgb
from ..motion.trajectories import LAYOUTS, TrajectoryError, build_trajectories
from .errors import VideoGrainInputError
from .model_patch import RESOLUTIONS, TRAJECTORY_NODE, check_sd15, trajectories_clone, trajectory_grids

FLOW_NODE = "VideoGrainOpticalFlow"


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


NODE_CLASS_MAPPINGS = {FLOW_NODE: VideoGrainOpticalFlow, TRAJECTORY_NODE: VideoGrainTrajectoryAttention}
NODE_DISPLAY_NAME_MAPPINGS = {FLOW_NODE: "VideoGrain Optical Flow", TRAJECTORY_NODE: "VideoGrain Trajectory Attention"}
