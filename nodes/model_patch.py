"""Installing VideoGrain's attention on a ModelPatcher clone (never on the model passed in).

All patches go through `ModelPatcher.clone()` and `transformer_options["patches_replace"]`; per-run
state (the attention recorder) and per-model settings (temporal windows, trajectories) live under the
pack's own keys in the clone's transformer_options.
"""
from __future__ import annotations

from ..attention.patch import ALLOC_GUARD_KEY, SpaceTimeSelfAttention, STLayoutAttention
from ..attention.pnp import PNP_KEY, PnPSettings, call_context_wrapper, residual_object_name, residual_patches
from ..attention.recorder import RECORDER_KEY, AttentionRecorder
from ..attention.settings import STLayoutSettings
from ..attention.trajectory import TRAJECTORIES_KEY
from ..attention.windows import WINDOWS_KEY, TemporalWindows, WindowError
from ..masks.layout import attention_sizes, latent_size_of
from ..sampling.pnp_features import RESIDUAL_BLOCKS

WrappersMP_DIFFUSION_MODEL = "diffusion_model"  # comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL

STATE_KEY = "videograin"  # transformer_options key holding the EditPatch of an ST-Layout model

# SD1.5 transformer blocks as ComfyUI tags them (block_name, number); docs/design.md §6.
SD15_BLOCKS = [("input", 1), ("input", 2), ("input", 4), ("input", 5), ("input", 7), ("input", 8),
               ("middle", 0)] + [("output", i) for i in range(3, 12)]
HIGHEST_RESOLUTION = {("input", 1), ("input", 2), ("output", 9), ("output", 10), ("output", 11)}
LEVELS = {"below_highest": [b for b in SD15_BLOCKS if b not in HIGHEST_RESOLUTION], "all": SD15_BLOCKS}


class EditPatch:
    """What VideoGrainApplySTLayout leaves on its clone: the layout and the settings it used."""

    def __init__(self, layout, settings: STLayoutSettings, levels: str):
        self.layout, self.settings, self.levels = layout, settings, levels

    def __deepcopy__(self, memo):
        return self


def check_sd15(model, node: str) -> None:
    """Refuse models whose UNet is not laid out like SD1.5 (the patch keys would not exist)."""
    from .errors import VideoGrainInputError

    config = getattr(getattr(model.model, "model_config", None), "unet_config", {}) or {}
    if config.get("transformer_depth_output") != [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0] \
            or list(config.get("channel_mult", [])) != [1, 2, 4, 4]:
        raise VideoGrainInputError(node, "model", "VideoGrain works on SD1.5-family checkpoints only "
                                   "(this UNet has another block layout)",
                                   "load an SD1.5 checkpoint (LoRAs and fine-tunes of SD1.5 are fine)")


def _foreign_keys(model) -> list:
    """Attention replacements that another pack installed on the blocks we need."""
    replace = model.model_options.get("transformer_options", {}).get("patches_replace", {})
    ours = (SpaceTimeSelfAttention, STLayoutAttention)
    return [(kind, key) for kind in ("attn1", "attn2") for key, fn in replace.get(kind, {}).items()
            if not isinstance(fn, ours)]


def malloc_guard():
    """ComfyUI's `model_prefetch.pause_malloc_graph` where it exists (current releases: tensors made under
    it stay outside a captured allocation graph), else None (0.3.75)."""
    try:
        from comfy import model_prefetch
    except ImportError:
        return None
    guard = getattr(model_prefetch, "pause_malloc_graph", None)
    return guard if callable(guard) else None


def _clone_checked(model, node: str):
    from .errors import VideoGrainInputError

    foreign = _foreign_keys(model)
    if foreign:
        raise VideoGrainInputError(node, "model", f"another node already replaced attention at {foreign[:3]}; "
                                   "VideoGrain needs every self-attention layer and cannot chain with it",
                                   "apply the other attention patch after VideoGrain, or remove it")
    return model.clone()


def spacetime_clone(model, node: str = "VideoGrainInvert"):
    """A clone whose attn1 layers run full space-time self-attention over all frames (no modulation).

    A model that went through VideoGrainApplySTLayout loses its modulation on the clone (the inversion
    must never be modulated, docs/design.md §1); temporal windows and other options stay.
    """
    m = _clone_checked(model, node)
    options = m.model_options["transformer_options"]
    guard = malloc_guard()
    if guard is not None:
        options[ALLOC_GUARD_KEY] = guard
    if options.pop(STATE_KEY, None) is not None:
        replace = dict(options.get("patches_replace", {}))
        replace["attn2"] = {key: fn for key, fn in replace.get("attn2", {}).items()
                            if not isinstance(fn, STLayoutAttention)}
        options["patches_replace"] = replace
    patch = SpaceTimeSelfAttention()
    for block_name, number in SD15_BLOCKS:
        m.set_model_attn1_replace(patch, block_name, number)
    return m


def stlayout_clone(model, layout, settings: STLayoutSettings, levels: str = "below_highest",
                   node: str = "VideoGrainApplySTLayout"):
    """A clone with space-time self-attention everywhere and ST-Layout Attn on the chosen levels."""
    m = spacetime_clone(model, node)
    self_patch = STLayoutAttention("self", layout, settings)
    cross_patch = STLayoutAttention("cross", layout, settings)
    for block_name, number in LEVELS[levels]:
        m.set_model_attn1_replace(self_patch, block_name, number)
        m.set_model_attn2_replace(cross_patch, block_name, number)
    m.model_options["transformer_options"][STATE_KEY] = EditPatch(layout, settings, levels)
    return m


def edit_patch(model) -> EditPatch | None:
    """The EditPatch of a model that went through VideoGrainApplySTLayout, else None."""
    return model.model_options.get("transformer_options", {}).get(STATE_KEY)


def prepare_edit_model(model):
    """For the sampler: (clone ready to edit, layout or None, recorder or None).

    A model from VideoGrainApplySTLayout keeps its patch and gets a fresh attention recorder;
    any other model gets plain space-time attention and no layout (a global edit, docs/design.md quirk 17).
    """
    patch = edit_patch(model)
    if patch is None:
        return spacetime_clone(model, "VideoGrainSampler"), None, None
    m = model.clone()
    recorder = AttentionRecorder(patch.layout, LEVELS[patch.levels])
    m.model_options["transformer_options"][RECORDER_KEY] = recorder
    return m, patch.layout, recorder


WINDOWS_NODE = "VideoGrainTemporalWindows"


def windows_clone(model, windows: TemporalWindows):
    """A clone whose self-attention runs over `windows` in inversion and editing (docs/design.md §16)."""
    m = model.clone()
    m.model_options["transformer_options"][WINDOWS_KEY] = windows
    return m


def check_windows(model, frames: int) -> None:
    """Refuse, before any UNet call, temporal windows that do not fit a clip of `frames` frames."""
    from .errors import VideoGrainInputError

    windows = model.model_options.get("transformer_options", {}).get(WINDOWS_KEY)
    if windows is None:
        return
    try:
        windows.plan(frames)
    except WindowError as exc:
        raise VideoGrainInputError(WINDOWS_NODE, exc.input_name, f"{exc.problem} (the clip has {frames} frames)",
                                   exc.fix) from exc


TRAJECTORY_NODE = "VideoGrainTrajectoryAttention"
# Resolutions named by the official factors at 512² (64 = latent grid H/8, then 32, 16); any frame size
# maps them to the UNet's own token grids with masks.layout.attention_sizes (docs/design.md §10.1).
RESOLUTIONS = {"64": 1, "64+32": 2, "64+32+16": 3}


def trajectory_grids(image_size: tuple[int, int], resolution: str) -> list[tuple[int, int]]:
    """Token grids (h, w) named by `resolution` for frames of `image_size` (H, W) pixels, distinct."""
    grids = attention_sizes(latent_size_of(*image_size))[:RESOLUTIONS[resolution]]
    return list(dict.fromkeys(grids))


def trajectories_clone(model, trajectories: dict):
    """A clone whose self-attention at the grids of `trajectories` ((h, w) -> Trajectories) is followed by
    trajectory attention, in inversion and editing (docs/design.md §10.1)."""
    m = model.clone()
    m.model_options["transformer_options"][TRAJECTORIES_KEY] = dict(trajectories)
    return m


def check_trajectories(model, frames: int, latent_size: tuple[int, int]) -> None:
    """Refuse, before any UNet call, trajectories built from a flow of another frame count or size."""
    from .errors import VideoGrainInputError

    trajectories = model.model_options.get("transformer_options", {}).get(TRAJECTORIES_KEY)
    if not trajectories:
        return
    grids = attention_sizes(tuple(latent_size))[:max(RESOLUTIONS.values())]
    for size, traj in trajectories.items():
        if traj.frames != frames:
            raise VideoGrainInputError(TRAJECTORY_NODE, "flow", f"the flow is for {traj.frames} frames but the "
                                       f"clip has {frames}", "compute the flow (VideoGrainOpticalFlow) from the "
                                       "same frames that were VAE-encoded (same frame_load_cap / skip / nth)")
        if tuple(size) not in grids:
            h, w = latent_size
            raise VideoGrainInputError(TRAJECTORY_NODE, "flow", f"the flow's frames give token grid "
                                       f"{size[0]}x{size[1]}, but the clip's latent {h}x{w} (pixels "
                                       f"{8 * h}x{8 * w}) has grids {', '.join(f'{a}x{b}' for a, b in grids)}",
                                       "compute the flow from the frames at the size that was VAE-encoded")


PNP_NODE = "VideoGrainPnP"
PNP_WRAPPER_KEY = "videograin_pnp"


def pnp_clone(model, settings: PnPSettings):
    """A clone that records PnP features in VideoGrainInvert and injects them in VideoGrainSampler
    (docs/design.md §10): the settings under PNP_KEY, object patches on the three recorded ResBlocks'
    residual branches and a DIFFUSION_MODEL wrapper that lets those see the call's options. With
    inject_step 0 the clone carries none of them (PnP off)."""
    m = model.clone()
    remove_pnp(m)
    if settings.inject_step <= 0:
        return m
    m.model_options["transformer_options"][PNP_KEY] = settings
    for name, patch in residual_patches(m.get_model_object).items():
        m.add_object_patch(name, patch)
    m.add_wrapper_with_key(WrappersMP_DIFFUSION_MODEL, PNP_WRAPPER_KEY, call_context_wrapper)
    return m


def remove_pnp(m) -> None:
    """Take VideoGrainPnP's settings, object patches and wrapper off the clone `m` (in place)."""
    m.model_options["transformer_options"].pop(PNP_KEY, None)
    for block in RESIDUAL_BLOCKS:
        m.object_patches.pop(residual_object_name(block), None)
    m.remove_wrappers_with_key(WrappersMP_DIFFUSION_MODEL, PNP_WRAPPER_KEY)


def pnp_settings(model) -> PnPSettings | None:
    """The model's PnP settings when injection is on, else None (pnp_clone stores none for inject_step 0)."""
    return model.model_options.get("transformer_options", {}).get(PNP_KEY)
