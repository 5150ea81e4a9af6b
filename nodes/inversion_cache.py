"""The node layer of the disk inversion cache (docs/design.md §17): where it lives and what its key reads.

The key is built from content only (sampling.cache.key), so it survives a server restart: the source
latent, the source conditioning (ControlNets by type, hint, strength, range and weights), the steps
and σ schedule, a fingerprint of the model's UNPATCHED weights plus its patches (LoRAs) and every model
option that can change the inversion (the pack's temporal windows and trajectory attention, other
packs' attention patches and wrappers, object patches).

The default folder is `<ComfyUI user dir>/videograin/inversion_cache`: ComfyUI empties its temp folder
at start and exit, so the temp folder would lose every inversion at a restart. `VIDEOGRAIN_CACHE_DIR`
overrides it.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..attention.patch import ALLOC_GUARD_KEY, PNP_SESSION_KEY, SpaceTimeSelfAttention, STLayoutAttention
from ..attention.pnp import PnPResidual
from ..attention.recorder import RECORDER_KEY
from ..attention.windows import TemporalWindows
from ..sampling.cache import CacheKeyError, describe, inversion_cache_key, patches_fingerprint, weights_fingerprint
from ..sampling.cache.key import tensor_digest

_log = logging.getLogger("videograin")

CACHE_ENV = "VIDEOGRAIN_CACHE_DIR"
# Bump when the inversion loop changes its result for the same inputs: old entries then miss.
ALGORITHM = "ddim-invert-v1"
# transformer_options keys that never change the inversion: per-run state and the ST-Layout patch
# (spacetime_clone drops it), and keys core sets during sampling.
_IGNORED_OPTIONS = {RECORDER_KEY, ALLOC_GUARD_KEY, PNP_SESSION_KEY, "videograin", "cond_or_uncond", "sigmas", "sample_sigmas", "uuids",
                    "activations_shape", "original_shape", "block", "block_index", "transformer_index"}
_OURS = (SpaceTimeSelfAttention, STLayoutAttention)


def cache_folder() -> Path:
    """`$VIDEOGRAIN_CACHE_DIR`, else `<user dir>/videograin/inversion_cache` (not temp: ComfyUI clears that)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env:
        return Path(os.path.expanduser(env))
    import folder_paths  # imported here: the module also loads without a host (unit tests)
    return Path(folder_paths.get_user_directory()) / "videograin" / "inversion_cache"


def plain(obj: Any, opaque: set[str], depth: int = 0) -> Any:
    """`obj` as plain data for the key: containers recursively, then the node layer's known objects
    (ControlNets, temporal windows, torch modules), anything else through `sampling.cache.key.describe`."""
    if depth > 32:
        raise CacheKeyError("options nested deeper than 32 levels")
    if isinstance(obj, (list, tuple)):
        return [plain(o, opaque, depth + 1) for o in obj]
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, tuple) else repr(k): plain(v, opaque, depth + 1) for k, v in obj.items()}
    if isinstance(obj, TemporalWindows):
        return {"type": "TemporalWindows", "window": obj.window, "overlap": obj.overlap, "anchors": obj.anchors}
    if hasattr(obj, "cond_hint_original") and hasattr(obj, "strength"):  # comfy.controlnet.ControlBase
        return describe_controlnet(obj, opaque, depth)
    if isinstance(obj, PnPResidual):  # its weights are the model's own, already in the weights fingerprint
        return {"type": "PnPResidual", "block": obj.pnp_block}
    if isinstance(obj, torch.nn.Module):
        return {"module": f"{type(obj).__module__}.{type(obj).__qualname__}",
                "weights": weights_fingerprint(obj.state_dict().items())}
    if isinstance(obj, _OURS):
        return type(obj).__qualname__
    if not isinstance(obj, torch.Tensor) and hasattr(obj, "__dict__") and not callable(obj):
        # An unknown settings object (another pack's, or the pack's trajectory attention): its fields.
        fields = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        return {"object": f"{type(obj).__module__}.{type(obj).__qualname__}", "fields": plain(fields, opaque, depth + 1)}
    return describe(obj, opaque)


def describe_controlnet(cn, opaque: set[str], depth: int = 0) -> dict:
    """A ControlNet (or T2I adapter, control LoRA) by type, hint digest, strength, range, weights and the
    ControlNet chained before it."""
    if depth > 16:
        raise CacheKeyError("ControlNets chained more than 16 deep")
    hint = getattr(cn, "cond_hint_original", None)
    module = getattr(cn, "control_model", None) or getattr(cn, "t2i_model", None)
    if isinstance(module, torch.nn.Module):
        weights = weights_fingerprint(module.state_dict().items())
    else:  # e.g. a control LoRA before its first use: its weight dict
        weights = plain(getattr(cn, "control_weights", None), opaque, depth + 1)
    previous = getattr(cn, "previous_controlnet", None)
    return {
        "type": f"{type(cn).__module__}.{type(cn).__qualname__}",
        "hint": tensor_digest(hint) if isinstance(hint, torch.Tensor) else plain(hint, opaque, depth + 1),
        "strength": float(getattr(cn, "strength", 1.0)),
        "range": [float(x) for x in getattr(cn, "timestep_percent_range", ())],
        "global_average_pooling": bool(getattr(cn, "global_average_pooling", False)),
        "weights": weights,
        "previous": None if previous is None else describe_controlnet(previous, opaque, depth + 1),
    }


def unpatched_weights(model) -> dict[str, torch.Tensor]:
    """model.model's state dict with ComfyUI's backups substituted: while a model is loaded, its patches
    (LoRAs) are applied in place and the originals wait in `model.backup[key].weight`."""
    state = dict(model.model.state_dict())
    for key, saved in (getattr(model, "backup", None) or {}).items():
        weight = getattr(saved, "weight", saved)
        if key in state and isinstance(weight, torch.Tensor):
            state[key] = weight
    return state


def model_options_description(model, opaque: set[str]) -> dict:
    """Every model option that can change an inversion, as plain data: transformer_options minus per-run
    state and the pack's own attention patches, the rest of model_options, and object patches."""
    options = dict(model.model_options)
    transformer = {k: v for k, v in dict(options.pop("transformer_options", {})).items() if k not in _IGNORED_OPTIONS}
    replace = transformer.pop("patches_replace", {}) or {}
    foreign = {kind: {k: fn for k, fn in fns.items() if not isinstance(fn, _OURS)} for kind, fns in replace.items()}
    transformer["patches_replace"] = {kind: fns for kind, fns in foreign.items() if fns}
    return {"transformer_options": plain(transformer, opaque), "model_options": plain(options, opaque),
            "object_patches": plain(dict(getattr(model, "object_patches", {}) or {}), opaque)}


def inversion_key(model, positive, samples: torch.Tensor, steps: int, sigmas: torch.Tensor) -> tuple[str, set[str]]:
    """(cache key, names of object types keyed by type only) of VideoGrainInvert's inputs.

    `model` is the MODEL as connected (before the pack's space-time clone), `samples` the source latent
    as the inversion reads it, `sigmas` its schedule. Raises CacheKeyError when an input cannot be keyed.
    """
    opaque: set[str] = set()
    inner = model.model
    options = {
        "algorithm": ALGORITHM,
        "sigmas": tensor_digest(sigmas.float().cpu()),
        "model_type": f"{type(inner).__module__}.{type(inner).__qualname__}",
        "dtype": str(inner.get_dtype()) if hasattr(inner, "get_dtype") else "",
        "manual_cast": str(getattr(inner, "manual_cast_dtype", None)),
        "model": model_options_description(model, opaque),
    }
    conditioning = plain(positive, opaque)
    key = inversion_cache_key(samples, conditioning, int(steps), weights_fingerprint(unpatched_weights(model).items()),
                              patches_fingerprint(dict(getattr(model, "patches", {}) or {})), options)
    return key, opaque
