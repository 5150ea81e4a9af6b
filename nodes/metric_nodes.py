"""CLIP-T and CLIP-F nodes on the CLIP_VISION / CLIP models already loaded in ComfyUI (docs/design.md §12.1).

The math is motion/clip_scores.py; this module only gets the embeddings:
- images: `clip_vision.encode_image(frames)["image_embeds"]`, core's CLIP preprocessing (shorter side to
  the model's size, centre crop, CLIP mean/std) and its visual projection;
- text: the CLIP object's pooled output. ComfyUI 0.3.75 returns the UNPROJECTED pooled output for SD1.x
  text encoders (SD1CheckpointClipModel sets return_projected_pooled=False, and SD1.5 checkpoints do not
  carry `text_projection` at all: core drops it when saving and does not warn when it is missing), so the
  pooled vector is in the text tower's hidden space, not CLIP's joint image-text space, even where its
  size (768) equals ViT-L's image embedding. The node therefore asks for the unprojected pooled output
  (`encode_from_tokens(..., return_pooled="unprojected")`) and applies the CLIP's own `text_projection`
  itself, refusing a projection that looks never loaded (`_never_loaded`, a heuristic: core keeps no
  record of the weights a file lacked) and one whose size differs from the image embeddings'.
"""
from __future__ import annotations

import torch

from ..motion.clip_scores import SCALE, ClipScoreError, clip_frame_score, clip_text_score
from .errors import VideoGrainInputError

TEXT_NODE = "VideoGrainCLIPText"
FRAMES_NODE = "VideoGrainCLIPFrames"
CATEGORY = "VideoGrain/motion"  # next to VideoGrainWarpError, the third Table 1 metric
CHUNK = 16  # frames per encode_image call (bounds memory on long clips)
PAPER = "paper Table 1, VideoGrain: CLIP-F 98.63, CLIP-T 36.56 (its CLIP model and preprocessing are not stated)"

_TEXT_FIX = ("load a CLIP text encoder whose file holds text_projection and matches the CLIP vision model, e.g. "
             "OpenAI CLIP ViT-L/14's text encoder (clip_l.safetensors) with CLIPLoader type stable_diffusion "
             "for a ViT-L/14 CLIP vision model")


def _check_vision(node: str, clip_vision) -> None:
    if not callable(getattr(clip_vision, "encode_image", None)) or \
            not hasattr(getattr(clip_vision, "model", None), "visual_projection"):
        raise VideoGrainInputError(node, "clip_vision",
                                   f"this is not a CLIP vision model ({type(clip_vision).__name__})",
                                   "connect the CLIP_VISION output of CLIPVisionLoader with a CLIP vision checkpoint "
                                   "(not DINOv2)")


def _frames(node: str, images, least: int, needs: str) -> torch.Tensor:
    """The frames' RGB channels; `needs` says why the score needs `least` frames ("CLIP-F compares ...")."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] < 3:
        raise VideoGrainInputError(node, "images", "this is not an IMAGE batch [frames, height, width, channels]",
                                   "connect decoded frames (IMAGE)")
    if images.shape[0] < least:
        raise VideoGrainInputError(node, "images", f"{needs} at least {least}, got {images.shape[0]}",
                                   f"connect a clip of at least {least} frames")
    return images[..., :3]


def image_embeddings(node: str, clip_vision, images: torch.Tensor) -> torch.Tensor:
    """Projected image embeddings [F, D] (float32, CPU) of the frames, encoded CHUNK frames at a time."""
    _check_vision(node, clip_vision)
    parts = []
    with torch.no_grad():
        for start in range(0, images.shape[0], CHUNK):
            out = clip_vision.encode_image(images[start:start + CHUNK])
            parts.append(out["image_embeds"].detach().float().cpu())
    return torch.cat(parts)


def _text_projection(node: str, clip) -> torch.Tensor:
    model = getattr(clip, "cond_stage_model", None)
    if model is None or not callable(getattr(clip, "tokenize", None)):
        raise VideoGrainInputError(node, "clip", f"this is not a CLIP text encoder ({type(clip).__name__})",
                                   "connect the CLIP output of CLIPLoader (a text encoder file with text_projection)")
    found = [(name, module) for name, module in model.named_modules() if name.split(".")[-1] == "text_projection"]
    if len(found) != 1:
        names = ", ".join(name for name, _ in found) or "none"
        raise VideoGrainInputError(node, "clip", f"this CLIP holds {len(found)} text projections ({names}); CLIP-T "
                                   "needs exactly one text encoder", _TEXT_FIX)
    module = found[0][1]
    param = module.weight
    weight = param.detach().float().cpu()
    scale = getattr(module, "scale_weight", None)  # scaled-fp8 text encoders store weight / scale
    if isinstance(scale, torch.Tensor):
        weight = weight * scale.detach().float().cpu()
    if _never_loaded(param, weight):
        raise VideoGrainInputError(node, "clip", "its text projection (text_projection) was never loaded: SD1.x "
                                   "checkpoints do not carry one, so their pooled text output is not in CLIP's "
                                   "image-text space", _TEXT_FIX)
    return weight


def _never_loaded(param: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether a text_projection looks like core's uninitialised placeholder rather than loaded weights.

    Core builds text encoders with torch.empty weights and fills them in place from the file; a weight the
    file lacks keeps whatever the memory held: zeros, NaN/inf, or leftover bytes. Outside inference mode
    an in-place load bumps the tensor's version counter, so version 0 means never written (ComfyUI runs
    nodes in inference mode, whose tensors have no counter). Otherwise the values decide: a loaded
    projection is finite, has few exact zeros (under 10 %; fp8 rounds some small weights to 0) and no
    entry near 10 (CLIP's are below 1); leftover memory usually fails one of these. It can still pass by
    chance: see docs/design.md §12.1.
    """
    if not torch.is_inference(param) and param._version == 0:
        return True
    if not torch.isfinite(weight).all():
        return True
    return bool((weight == 0).float().mean() > 0.1 or weight.abs().max() > 10.0)


def text_embedding(node: str, clip, text: str) -> torch.Tensor:
    """Projected text embedding [1, D] (float32, CPU): the CLIP's unprojected pooled output × its text_projection.

    Prompts longer than one 77-token chunk use the first chunk's pooled output (what core returns).
    """
    if not isinstance(text, str) or not text.strip():
        raise VideoGrainInputError(node, "text", "the prompt is empty", "type the edit's target prompt")
    weight = _text_projection(node, clip)
    with torch.no_grad():
        _, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled="unprojected")
    if pooled is None:
        raise VideoGrainInputError(node, "clip", "this text encoder returns no pooled output", _TEXT_FIX)
    pooled = pooled.detach().float().cpu().reshape(1, -1)
    if pooled.shape[1] != weight.shape[1]:
        raise VideoGrainInputError(node, "clip", f"its pooled output has {pooled.shape[1]} values but its "
                                   f"text_projection expects {weight.shape[1]}", _TEXT_FIX)
    return pooled @ weight.T


def _values(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def _check_same_space(node: str, image_dims: int, text_dims: int) -> None:
    if image_dims != text_dims:
        raise VideoGrainInputError(node, "clip", f"the CLIP vision model embeds images in {image_dims} dimensions "
                                   f"but the text encoder's projection gives {text_dims}: they are not one CLIP",
                                   _TEXT_FIX)


class VideoGrainCLIPText:
    DESCRIPTION = ("CLIP-T, the paper's text-alignment metric (higher = closer to the prompt): the mean over frames "
                   "of the cosine similarity between each frame's CLIP image embedding and the prompt's CLIP text "
                   "embedding, ×100 as in the paper's Table 1 (VideoGrain 36.56, with a CLIP the paper does not "
                   "name). Uses the CLIP_VISION and CLIP models you load; they must be the two towers of one CLIP "
                   "(e.g. ViT-L/14 vision + its text encoder clip_l with text_projection). An SD1.5 checkpoint's CLIP "
                   "cannot be used: it carries no text projection.")
    CATEGORY = CATEGORY
    FUNCTION = "measure"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("clip_t", "report")
    OUTPUT_TOOLTIPS = ("CLIP-T ×100: the mean over frames of cos(frame, prompt).",
                       "The value, the per-frame values, the embedding size and the paper's numbers.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "A CLIP vision model (CLIPVisionLoader), the image tower of the "
                                                       "same CLIP as the text encoder."}),
            "clip": ("CLIP", {"tooltip": "The CLIP text encoder of the same CLIP, with its text_projection (e.g. "
                                         "clip_l.safetensors through CLIPLoader, type stable_diffusion)."}),
            "images": ("IMAGE", {"tooltip": "The edited frames (decoded); each is resized and centre-cropped as CLIP "
                                            "expects."}),
            "text": ("STRING", {"multiline": True, "default": "", "tooltip":
                     "The edit's target prompt (without weights syntax for a clean score)."}),
        }}

    def measure(self, clip_vision, clip, images, text):
        node = TEXT_NODE
        frames = _frames(node, images, 1, "CLIP-T scores each frame and needs")
        _check_vision(node, clip_vision)
        projection = getattr(getattr(clip_vision.model, "visual_projection", None), "weight", None)
        text_embed = text_embedding(node, clip, text)
        if projection is not None:  # before encoding any frame, where the vision model states its size
            _check_same_space(node, projection.shape[0], text_embed.shape[1])
        image_embeds = image_embeddings(node, clip_vision, frames)
        _check_same_space(node, image_embeds.shape[1], text_embed.shape[1])
        try:
            score = clip_text_score(image_embeds, text_embed, SCALE)
        except ClipScoreError as exc:
            raise VideoGrainInputError(node, "images", str(exc), "check the models: an embedding is degenerate") \
                from exc
        report = (f"CLIP-T (cosine ×{SCALE:g}) over {frames.shape[0]} frames: {score.value:.4f}\n"
                  f"per frame: {_values(score.per_frame)}\nembeddings: {image_embeds.shape[1]}-d; {PAPER}")
        return {"ui": {"text": [report]}, "result": (float(score.value), report)}


class VideoGrainCLIPFrames:
    DESCRIPTION = ("CLIP-F, the paper's frame-consistency metric (higher = steadier content): the mean cosine "
                   "similarity between the CLIP image embeddings of consecutive frames, ×100 as in the paper's "
                   "Table 1 (VideoGrain 98.63, with a CLIP the paper does not name). Uses the CLIP_VISION model you "
                   "load (CLIPVisionLoader); no text encoder needed.")
    CATEGORY = CATEGORY
    FUNCTION = "measure"
    OUTPUT_NODE = True
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("clip_f", "report")
    OUTPUT_TOOLTIPS = ("CLIP-F ×100: the mean over t of cos(frame t, frame t+1).",
                       "The value, the per-pair values, the embedding size and the paper's numbers.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "A CLIP vision model (CLIPVisionLoader)."}),
            "images": ("IMAGE", {"tooltip": "The edited frames (decoded, at least 2); each is resized and "
                                            "centre-cropped as CLIP expects."}),
        }}

    def measure(self, clip_vision, images):
        node = FRAMES_NODE
        frames = _frames(node, images, 2, "CLIP-F compares consecutive frames and needs")
        image_embeds = image_embeddings(node, clip_vision, frames)
        try:
            score = clip_frame_score(image_embeds, SCALE)
        except ClipScoreError as exc:
            raise VideoGrainInputError(node, "images", str(exc), "check the model: an embedding is degenerate") \
                from exc
        report = (f"CLIP-F (cosine ×{SCALE:g}) over {frames.shape[0] - 1} frame pairs: {score.value:.4f}\n"
                  f"per pair: {_values(score.per_frame)}\nembeddings: {image_embeds.shape[1]}-d; {PAPER}")
        return {"ui": {"text": [report]}, "result": (float(score.value), report)}


NODE_CLASS_MAPPINGS = {TEXT_NODE: VideoGrainCLIPText, FRAMES_NODE: VideoGrainCLIPFrames}
NODE_DISPLAY_NAME_MAPPINGS = {TEXT_NODE: "VideoGrain CLIP-T (text alignment)",
                              FRAMES_NODE: "VideoGrain CLIP-F (frame consistency)"}
