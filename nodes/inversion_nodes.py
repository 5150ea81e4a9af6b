"""VideoGrainInvert and VideoGrainSampler: DDIM inversion and the editing run on ComfyUI's sampling machinery.

Both run `comfy.sample.sample_custom` with a `KSAMPLER` wrapping the pack's own loops
(`sampling.ddim`), so conditioning goes through core's code path (ControlNetApplyAdvanced, area and
mask conds, CFG, model wrappers) and the σ schedule is core's `ddim_uniform`.
"""
from __future__ import annotations

import logging
import time

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import latent_preview

from ..attention.patch import PNP_SESSION_KEY
from ..attention.pnp import PnPSession, PnPSettings
from ..attention.recorder import AttentionRecord
from ..sampling import ddim
from ..sampling.blend import DEFAULT_MODE, MODES, BackgroundBlend
from ..sampling.cache import CacheError, CacheKeyError, InversionCache
from ..sampling.inversion import Inversion
from ..sampling.pnp_features import PnPFeatures
from ..sampling.schedule import editing_sigmas
from .errors import VideoGrainInputError, out_of_memory_hint
from .inversion_cache import CACHE_ENV, cache_folder, inversion_key
from .model_patch import (PNP_NODE, check_sd15, check_trajectories, check_windows, pnp_settings, prepare_edit_model,
                          spacetime_clone)
from .notify import warn

INVERT = "VideoGrainInvert"
SAMPLER = "VideoGrainSampler"
_log = logging.getLogger("videograin")
CACHE_MODES = ("on", "off", "refresh")
DEFAULT_CAP_GB = 20.0
_put_failed: set[str] = set()  # cache folders whose write failure the user was already told about
OOM_FIX = ("load fewer frames (VideoGrainLoadVideo frame_load_cap) or a smaller size (width/height); "
           "memory grows with frames × pixels")


def inversion_schedule(model_sampling, steps: int) -> torch.Tensor:
    """The model's `ddim_uniform` σ for `steps` (σ_T … σ_1, 0): at 50 steps t = 981, 961, …, 1 then 0.

    Built by `sampling.schedule.editing_sigmas` from the model's own σ table, exactly as core's
    scheduler of that name, so a core sampler started from the inverted latent stays on the same
    levels. When 1000 is not a multiple of `steps` core's rule yields more levels; the user is told.
    """
    sigmas = editing_sigmas(steps, model_sampling.sigmas)
    if len(sigmas) - 1 != steps:
        warn(INVERT, f"steps={steps} becomes {len(sigmas) - 1} DDIM steps: ComfyUI's ddim_uniform schedule steps "
                     f"by 1000 // {steps} = {1000 // steps} timesteps (50, 25, 20 or 10 steps divide evenly); the "
                     f"inversion and the edit both run {len(sigmas) - 1}")
    return sigmas


def _latent_samples(latent, node: str, model) -> torch.Tensor:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), torch.Tensor):
        raise VideoGrainInputError(node, "latent", "this is not a LATENT", "connect VAEEncode of the frames")
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if samples.ndim != 4:
        raise VideoGrainInputError(node, "latent", f"expected an image latent [frames, 4, h, w], got shape "
                                   f"{list(samples.shape)}", "encode the frames with core VAEEncode (SD1.5 VAE)")
    return samples


def _step_hook(callback, sigmas):
    """on_step for the loops: wait for the step, interrupt check, then core's per-step callback (progress
    bar, preview)."""
    def on_step(i, x, x0):
        ddim.wait_for_step(x)
        comfy.model_management.throw_exception_if_processing_interrupted()
        if callback is not None:
            callback({"i": i, "x": x, "denoised": x0, "sigma": sigmas[i], "sigma_hat": sigmas[i]})
    return on_step


def _checked_step_hook(callback, sigmas, recorder):
    """_step_hook that also checks, after the first step, that the ST-Layout patch ran at every block it
    was installed on: a UNet whose blocks are tagged differently would otherwise edit unmodulated."""
    on_step = _step_hook(callback, sigmas)
    if recorder is None:
        return on_step

    def checked(i, x, x0):
        if i == 0 and recorder.missing():
            raise VideoGrainInputError(SAMPLER, "model", f"the ST-Layout patch never ran at {recorder.missing()[:4]}",
                                       "use an SD1.5-family model whose UNet ComfyUI tags with SD1.5's block keys; "
                                       "if this is one, please report it with the checkpoint's name")
        on_step(i, x, x0)
    return checked


def _denoiser(model_k, x, extra_args):
    s_in = x.new_ones([x.shape[0]])
    return lambda x, sigma: model_k(x, sigma * s_in, **extra_args)  # as core's samplers call it


def _record_uncond_too(previous):
    """`sampler_calc_cond_batch_function` for the inversion calls that record PnP features: the cond pass
    exactly as without PnP, then the uncond pass (the sampler's negative) only for its features; the uncond
    prediction handed to CFG is zero, as core's cfg-1 shortcut leaves it, so the latent is unchanged."""
    def run(args, conds):
        if previous is not None:
            return previous({**args, "conds": conds})
        return comfy.samplers.calc_cond_batch(args["model"], conds, args["input"], args["sigma"],
                                              args["model_options"])

    def calc(args):
        cond, uncond = args["conds"]
        cond_out = run(args, [cond, None])[0]
        run(args, [None, uncond])  # index 1: the UNet sees cond_or_uncond = [1], the uncond half
        return [cond_out, torch.zeros_like(cond_out)]
    return calc


def _inversion_denoiser(model_k, x, extra_args, session: PnPSession | None):
    """_denoiser, plus the uncond pass in the calls whose PnP features are recorded."""
    plain = _denoiser(model_k, x, extra_args)
    if session is None:
        return plain
    options = dict(extra_args.get("model_options", {}))
    options["disable_cfg1_optimization"] = True
    options["sampler_calc_cond_batch_function"] = _record_uncond_too(options.get("sampler_calc_cond_batch_function"))
    recording = _denoiser(model_k, x, {**extra_args, "model_options": options})
    return lambda x, sigma: plain(x, sigma) if session.step({"sigmas": sigma}) is None else recording(x, sigma)


def _check_inject_step(settings: PnPSettings | None, schedule_steps: int) -> None:
    """Refuse an inject_step the schedule cannot serve (editing step i uses the inversion call at σ_{i+1})."""
    if settings is not None and settings.inject_step > schedule_steps - 1:
        raise VideoGrainInputError(PNP_NODE, "inject_step", f"inject_step is {settings.inject_step} but the "
                                   f"schedule has {schedule_steps} steps, and editing step i uses the inversion "
                                   "step below it, so at most steps − 1 steps can be injected",
                                   f"set inject_step to at most {schedule_steps - 1} (advised 5–10), or raise steps")


def run_inversion(work, positive, samples: torch.Tensor, sigmas: torch.Tensor, steps: int,
                  node: str = INVERT) -> Inversion:
    """DDIM inversion of `samples` on the prepared clone `work` (guidance 1, the σ schedule `sigmas`) through
    core's sample_custom; `node` names the node in an out-of-memory message. VideoGrainInvert and
    VideoGrainAutoRegions (which runs it for its attention calls) share it. A model from VideoGrainPnP also
    records its PnP features (`Inversion.pnp`)."""
    up = sigmas[:-1].flip(0)
    captured = {}
    settings = pnp_settings(work)
    _check_inject_step(settings, len(sigmas) - 1)
    session = None
    if settings is not None:
        session = PnPSession("record", PnPFeatures(settings.inject_step, int(samples.shape[0]), sigmas.float().cpu()))
        work.model_options["transformer_options"][PNP_SESSION_KEY] = session

    def invert_fn(model_k, noise, sigmas_up, extra_args=None, callback=None, disable=None):
        # `noise` arrives as latent_image + 0·σ (zero noise): the clean model-space latent.
        denoise = _inversion_denoiser(model_k, noise, extra_args or {}, session)
        x_T, trajectory = ddim.invert(denoise, noise, sigmas_up, _step_hook(callback, sigmas_up))
        captured["trajectory"] = trajectory
        return x_T

    callback = latent_preview.prepare_callback(work, max(len(up) - 1, 1))
    noise = torch.zeros(samples.shape, dtype=samples.dtype, device="cpu")
    # cfg 1: core skips the unconditional pass, so `negative` is a placeholder, except for PnP recording.
    negative = settings.negative if settings is not None else positive
    with out_of_memory_hint(node, "latent", OOM_FIX):
        latent_T = comfy.sample.sample_custom(work, noise, 1.0, comfy.samplers.KSAMPLER(invert_fn), up,
                                              positive, negative, samples, callback=callback,
                                              disable_pbar=True, seed=0)
    latent_T = latent_T.detach().float().cpu()
    trajectory = torch.stack([t.detach().float().cpu() for t in captured["trajectory"]])
    features = None
    if session is not None:
        features = session.features
        if features.missing():
            raise VideoGrainInputError(PNP_NODE, "model", f"the UNet never produced the PnP features "
                                       f"{features.missing()[:3]}", "use an SD1.5-family model whose UNet "
                                       "ComfyUI builds with SD1.5's output blocks; if it is one, please report it")
    return Inversion(latent_T=latent_T, source=samples.detach().float().cpu(), trajectory=trajectory,
                     sigmas=sigmas, steps=int(steps), pnp=features)


class VideoGrainInvert:
    DESCRIPTION = ("DDIM-inverts the source clip with the source prompt (guidance 1, full space-time "
                   "self-attention over all frames, no modulation), from the clean latent at t = 1 up to "
                   "t = 981 for 50 steps. The INVERSION feeds VideoGrainSampler; noisy_latent lets core "
                   "samplers start from the inverted latent. ControlNet conditioning applies at every step.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "invert"
    RETURN_TYPES = ("VIDEOGRAIN_INVERSION", "LATENT")
    RETURN_NAMES = ("inversion", "noisy_latent")
    OUTPUT_TOOLTIPS = ("The inverted latent, the per-step source path, the schedule and a hash of the inputs; "
                       "connect to VideoGrainSampler.",
                       "The inverted latent at the first editing step, for core samplers (add_noise off, "
                       "scheduler ddim_uniform, same steps).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "An SD1.5 model (LoRAs fine). Inversion runs it unmodulated."}),
            "positive": ("CONDITIONING", {"tooltip": "The SOURCE prompt describing the input clip (may be empty); "
                                                     "apply the same ControlNet as in the edit here."}),
            "latent": ("LATENT", {"tooltip": "The source frames encoded with core VAEEncode."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                              "tooltip": "DDIM steps; VideoGrainSampler must use the same number (official: 50)."}),
        }, "optional": {
            "cache": (list(CACHE_MODES), {"default": "on", "tooltip": (
                "Disk inversion cache: on reuses an inversion of the same frames, source prompt, model (weights, "
                "LoRAs), ControlNets, steps and options, also after a restart; off bypasses it; refresh "
                "recomputes and overwrites. Folder: <ComfyUI user dir>/videograin/inversion_cache (not the temp "
                f"folder, which ComfyUI empties at start and exit); the environment variable {CACHE_ENV} "
                "overrides it.")}),
            "cache_cap_gb": ("FLOAT", {"default": DEFAULT_CAP_GB, "min": 0.0, "max": 100000.0, "step": 0.5,
                                       "tooltip": "Size cap of the inversion cache folder in GB; the least "
                                                  "recently used inversions are deleted beyond it."}),
        }}

    def invert(self, model, positive, latent, steps, cache="on", cache_cap_gb=DEFAULT_CAP_GB):
        if cache not in CACHE_MODES:
            raise VideoGrainInputError(INVERT, "cache", f"unknown mode {cache!r}", f"pick one of {', '.join(CACHE_MODES)}")
        store = None
        if cache != "off":
            try:
                store = InversionCache(cache_folder(), int(float(cache_cap_gb) * 1e9))
            except CacheError:
                raise VideoGrainInputError(INVERT, "cache_cap_gb", f"the cache cap is {cache_cap_gb} GB; a cap of 0 "
                                           "would delete every inversion as soon as it is written",
                                           "set a cap above 0 (default 20 GB), or set cache to off") from None
        check_sd15(model, INVERT)
        samples = _latent_samples(latent, INVERT, model)
        check_windows(model, samples.shape[0])
        check_trajectories(model, samples.shape[0], tuple(samples.shape[-2:]))
        work = spacetime_clone(model, INVERT)
        sigmas = inversion_schedule(work.get_model_object("model_sampling"), steps)
        started = time.perf_counter()
        pnp = pnp_settings(model)
        key = _cache_key(model, positive, samples, steps, sigmas) if store is not None else ""
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}
        if key and cache == "on":
            hit = _cache_hit(store, key, samples, steps, pnp)
            if hit is not None:
                _log.info("[VideoGrain] inversion cache hit %s (key and load %.2f s; the UNet is not run)",
                          store.path(key), time.perf_counter() - started)
                out["samples"] = hit.latent_T
                return _invert_result(hit, out)
        record = run_inversion(work, positive, samples, sigmas, steps)
        record.key = key
        _log.info("[VideoGrain] inversion computed: %d steps in %.2f s (cache %s)", record.schedule_steps,
                  time.perf_counter() - started, cache)
        if key:
            meta = {"frames": int(samples.shape[0]), "steps": int(steps)}
            extra = {}
            if record.pnp is not None:
                meta["pnp"] = record.pnp.meta()
                extra = record.pnp.to_extra()
            if store.put(key, record, extra_tensors=extra, meta=meta):
                _log.info("[VideoGrain] inversion stored in the cache: %s", store.path(key))
            elif str(store.folder) not in _put_failed:
                _put_failed.add(str(store.folder))
                warn(INVERT, f"could not store the inversion in the cache folder {store.folder} (see the log); "
                             f"the edit runs on, uncached. Fix: make the folder writable, free disk space, set "
                             f"{CACHE_ENV} to a writable folder or raise cache_cap_gb")
        out["samples"] = record.latent_T
        return _invert_result(record, out)


def _cache_hit(store: InversionCache, key: str, samples: torch.Tensor, steps: int, pnp) -> Inversion | None:
    """The cached inversion under `key` when it fits these inputs (with its PnP features if PnP is on)."""
    entry = store.get_entry(key)
    if entry is None:
        return None
    hit = entry.inversion
    if hit.steps != int(steps) or tuple(hit.source.shape) != tuple(samples.shape):
        return None
    if pnp is not None:
        hit.pnp = PnPFeatures.from_extra(entry.extra, entry.meta.get("pnp"), hit.sigmas)
        if hit.pnp is None or hit.pnp.inject_step != pnp.inject_step:
            return None
    hit.key = key
    return hit


def _invert_result(record: Inversion, out: dict):
    """The node's outputs; the UI text reports the recorded PnP features and their size."""
    if record.pnp is None:
        return (record, out)
    report = record.pnp.describe()
    _log.info("[VideoGrain] %s", report)
    return {"ui": {"text": [report]}, "result": (record, out)}


def _cache_key(model, positive, samples, steps, sigmas) -> str:
    """The inversion's cache key, or "" (uncached, with a warning) when an input cannot be keyed."""
    try:
        key, opaque = inversion_key(model, positive, samples, steps, sigmas)
    except CacheKeyError as e:
        warn(INVERT, f"the inversion is not cached: {e}")
        return ""
    if opaque:
        _log.warning("[VideoGrain] the inversion cache key reads these objects by type only (two of one type "
                     "are not told apart): %s", ", ".join(sorted(opaque)))
    return key


class VideoGrainSampler:
    DESCRIPTION = ("Runs the VideoGrain edit: DDIM from the INVERSION with the given MODEL (usually from "
                   "VideoGrainApplySTLayout, whose ST-Layout Attn acts in the first steps) and CFG, keeping the "
                   "background outside the union of the region masks on the source path. With a plain model "
                   "it is a global edit (space-time attention, no modulation, no background blend).")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "VIDEOGRAIN_ATTENTION")
    RETURN_NAMES = ("latent", "attention")
    OUTPUT_TOOLTIPS = ("The edited latent; decode with core VAEDecode.",
                       "Per-region cross-attention maps recorded during the edit, for VideoGrainAttentionMaps.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model from VideoGrainApplySTLayout (a plain model gives a "
                                           "global edit)."}),
            "inversion": ("VIDEOGRAIN_INVERSION", {"tooltip": "The output of VideoGrainInvert for these frames."}),
            "positive": ("CONDITIONING", {"tooltip": "The edit prompt: VideoGrainLayout's positive output "
                                                     "(plus ControlNet if used in the inversion)."}),
            "negative": ("CONDITIONING", {"tooltip": "The negative prompt (official: empty)."}),
            "cfg": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (official: 7.5)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000,
                              "tooltip": "DDIM steps; must equal the steps of VideoGrainInvert."}),
            "seed": ("INT", {"default": 42, "min": 0, "max": 0xFFFFFFFFFFFFFFFF,
                             "tooltip": "Seeds the fresh noise of the source_noise background blend."}),
            "background": (list(MODES), {"default": DEFAULT_MODE,
                                         "tooltip": "Outside all masks: source_noise re-noises the source each "
                                                    "step (official); inversion_path follows the inversion "
                                                    "latents (deterministic); off edits everywhere."}),
        }}

    def sample(self, model, inversion, positive, negative, cfg, steps, seed, background):
        if not isinstance(inversion, Inversion):
            raise VideoGrainInputError(SAMPLER, "inversion", "this is not an INVERSION",
                                       "connect the inversion output of VideoGrainInvert")
        if steps != inversion.steps:
            raise VideoGrainInputError(SAMPLER, "steps", f"steps is {steps} but the inversion was made with "
                                       f"{inversion.steps} steps",
                                       f"set steps to {inversion.steps}, or set VideoGrainInvert's steps to {steps}")
        if background not in MODES:
            raise VideoGrainInputError(SAMPLER, "background", f"unknown mode {background!r}",
                                       f"pick one of {', '.join(MODES)}")
        check_sd15(model, SAMPLER)
        frames, _, h, w = inversion.latent_T.shape
        check_windows(model, frames)
        check_trajectories(model, frames, (h, w))
        work, layout, recorder = prepare_edit_model(model)
        session = _injection_session(model, inversion, negative)
        if session is not None:
            work.model_options["transformer_options"][PNP_SESSION_KEY] = session
        if layout is not None and (layout.frames != frames or tuple(layout.latent_size) != (h, w)):
            lh, lw = layout.latent_size
            raise VideoGrainInputError(SAMPLER, "inversion", f"the inversion has {frames} frames of latent "
                                       f"{h}x{w} but the model's layout has {layout.frames} frames of {lh}x{lw}",
                                       "invert the same frames (count and size) that the region masks were "
                                       "made for")

        blend = None
        if layout is not None and layout.num_regions > 0 and background != "off":
            z_src = work.model.process_latent_in(inversion.source)
            blend = BackgroundBlend(background, layout.union().float().cpu(), z_src, seed=seed,
                                    trajectory=inversion.trajectory, trajectory_sigmas=inversion.trajectory_sigmas)

        def edit_fn(model_k, noise, sigmas, extra_args=None, callback=None, disable=None):
            if blend is not None:  # keep the per-step tensors on the sampling device
                blend.mask = blend.mask.to(noise.device)
                blend.z_src = blend.z_src.to(noise.device)
            return ddim.sample(_denoiser(model_k, noise, extra_args or {}), noise, sigmas, blend,
                               _checked_step_hook(callback, sigmas, recorder))

        sigmas = inversion.sigmas
        callback = latent_preview.prepare_callback(work, len(sigmas) - 1)
        noise = torch.zeros(inversion.latent_T.shape, dtype=torch.float32, device="cpu")
        with out_of_memory_hint(SAMPLER, "inversion", OOM_FIX):
            samples = comfy.sample.sample_custom(work, noise, cfg, comfy.samplers.KSAMPLER(edit_fn), sigmas,
                                                 positive, negative, inversion.latent_T, callback=callback,
                                                 disable_pbar=True, seed=seed)
        if session is not None:
            steps_done = sorted({step for step, _, _ in session.injected})
            _log.info("[VideoGrain] PnP: injected %d recorded features in editing steps %s", len(session.injected),
                      steps_done)
        attention = recorder.result() if recorder is not None else AttentionRecord.empty(frames, h, w)
        return ({"samples": samples}, attention)


def _injection_session(model, inversion: Inversion, negative) -> PnPSession | None:
    """The sampler's PnP injection session, or None when the model has PnP off; refuses an INVERSION whose
    features do not belong to this edit."""
    settings = pnp_settings(model)
    if settings is None:
        if inversion.pnp is not None:
            _log.info("[VideoGrain] the INVERSION carries PnP features but the model has PnP off; they are unused")
        return None
    features = inversion.pnp
    fix = ("connect VideoGrainInvert to the model from the same VideoGrainPnP node (its inject_step and "
           "negative), so that it records the features")
    if features is None:
        raise VideoGrainInputError(SAMPLER, "inversion", f"the model injects PnP features in "
                                   f"{settings.inject_step} steps but this INVERSION was made without PnP", fix)
    if features.inject_step != settings.inject_step:
        raise VideoGrainInputError(SAMPLER, "inversion", f"the model injects PnP features in {settings.inject_step} "
                                   f"steps but the INVERSION recorded {features.inject_step}", fix)
    if features.frames != inversion.frames or not torch.equal(features.sigmas, inversion.sigmas.float().cpu()):
        raise VideoGrainInputError(SAMPLER, "inversion", "the INVERSION's PnP features belong to another clip or "
                                   "schedule", "re-run VideoGrainInvert (cache refresh) for these frames")
    if not _same_conditioning(negative, settings.negative):
        warn(SAMPLER, "the negative differs from the one VideoGrainPnP recorded the unconditional features with; "
                      "the uncond half gets features of another prompt. Fix: connect the same negative to both")
    return PnPSession("inject", features)


def _same_conditioning(a, b) -> bool:
    """Whether two CONDITIONING lists hold the same text embeddings (ControlNets are not compared)."""
    try:
        return len(a) == len(b) and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    except (TypeError, IndexError, RuntimeError):
        return False


CLEAR = "VideoGrainClearInversionCache"


class VideoGrainClearInversionCache:
    DESCRIPTION = ("Deletes (or, with clear off, only counts) every inversion in VideoGrainInvert's disk cache (<ComfyUI user dir>/videograin/"
                   f"inversion_cache, or ${CACHE_ENV}) and reports how many entries and bytes were removed. "
                   "Queue it on its own; it runs every time.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "clear"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("report",)
    OUTPUT_TOOLTIPS = ("What was removed, e.g. \"removed 3 inversions (41.2 MB) from <folder>\".",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clear": ("BOOLEAN", {"default": True, "label_on": "clear", "label_off": "report only",
                                  "tooltip": "On: delete every cached inversion. Off: only report what the cache "
                                             "holds."}),
        }}

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")  # never equal to itself: ComfyUI runs the node on every queue

    def clear(self, clear=True):
        store = InversionCache(cache_folder(), 1)  # the cap plays no part in clearing
        entries = store.entries()
        size = sum(e.size_bytes for e in entries)
        if not clear:
            report = f"the cache holds {len(entries)} inversions ({size / 1e6:.1f} MB) in {store.folder}"
            return {"ui": {"text": [report]}, "result": (report,)}
        removed = store.clear()
        left = sum(e.size_bytes for e in store.entries())
        report = f"removed {removed} inversions ({(size - left) / 1e6:.1f} MB) from {store.folder}"
        _log.info("[VideoGrain] %s", report)
        return {"ui": {"text": [report]}, "result": (report,)}


NODE_CLASS_MAPPINGS = {INVERT: VideoGrainInvert, SAMPLER: VideoGrainSampler, CLEAR: VideoGrainClearInversionCache}
NODE_DISPLAY_NAME_MAPPINGS = {INVERT: "VideoGrain Invert (DDIM)", SAMPLER: "VideoGrain Sampler",
                              CLEAR: "VideoGrain Clear Inversion Cache"}
