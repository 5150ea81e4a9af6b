"""VideoGrainRegion and VideoGrainLayout: bind local prompts to region masks (docs/design.md §2, §4).

Thin glue: ComfyUI's tokenizer output becomes token-key rows for `binding.prompts`, MASK batches
become `masks.layout.RegionSpec`s, and the result is a spliced CONDITIONING plus a RegionLayout.
"""
from __future__ import annotations

import hashlib
import logging

import torch

from ..masks.check import region_report
from ..masks.downsample import DEFAULT_RULE as DEFAULT_DOWNSAMPLE
from ..masks.downsample import RULES as DOWNSAMPLE_RULES
from ..masks.layout import KINDS, LayoutError, RegionLayout, RegionSpec, build_layout
from ..binding.bits import MAX_TOKENS, token_bits
from ..binding.prompts import DEFAULT_RULE as DEFAULT_BINDING
from ..binding.prompts import RULES as BINDING_RULES
from ..binding.prompts import PromptBindingError, bind_prompts, has_weight_syntax, split_occurrence, splice
from .errors import VideoGrainInputError

_log = logging.getLogger(__name__)

REGION = "VideoGrainRegion"
LAYOUT = "VideoGrainLayout"
_WEIGHT_FIX = ("write the local prompt as plain words (spliced words cannot carry weights), or escape literal "
               "parentheses as \\( \\)")
_OCCURRENCE_FIX = "end the prompt with '#' and a whole number from 1, e.g. 'man#2', or remove the '#' suffix"


def _label(k: int, spec: RegionSpec) -> str:
    return f"region {k + 1} ({spec.kind} {spec.prompt!r})" if spec.prompt else f"region {k + 1} ({spec.kind}, no prompt)"


def _name(k: int, spec: RegionSpec) -> str:
    return f"{k + 1}: {spec.prompt}" if spec.prompt else f"{k + 1}: ({spec.kind}, no prompt)"


class VideoGrainRegion:
    """One region: a mask stack and the part of the global prompt that belongs to it."""

    DESCRIPTION = ("Defines one edit region: a mask per frame and its local prompt, a phrase copied word for word "
                   "from the global prompt (e.g. 'Iron Man' in 'Iron Man and Spiderman are jogging'). Chain regions "
                   "through 'previous' to edit several objects or parts; masks may overlap (a part inside an "
                   "instance). An empty prompt keeps the region as it is but still separates it in self-attention.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "run"
    RETURN_TYPES = ("VIDEOGRAIN_REGION",)
    RETURN_NAMES = ("regions",)
    OUTPUT_TOOLTIPS = ("The ordered list of regions so far (previous regions, then this one); connect to the next "
                       "VideoGrainRegion or to VideoGrainLayout.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mask": ("MASK", {"tooltip": "The region's mask, one per frame ([F, H, W]) at the size of the frames "
                                             "you encode; a single mask is used for every frame."}),
                "prompt": ("STRING", {"default": "", "multiline": False,
                                      "tooltip": "Local prompt: words that appear verbatim in the global prompt and "
                                                 "describe this region. Leave empty to keep the region separated but "
                                                 "unbound to any words. No weight syntax such as (word:1.2). When the "
                                                 "words occur more than once, append '#N' to bind the N-th "
                                                 "occurrence ('man#2'); without it the layout's 'binding' rule "
                                                 "chooses (by default the first occurrence no other region "
                                                 "claims)."}),
                "kind": (list(KINDS), {"default": "instance",
                                       "tooltip": "Region granularity (class, instance, part or background). "
                                                  "Informational: shown in errors and attention maps."}),
            },
            "optional": {
                "previous": ("VIDEOGRAIN_REGION", {"tooltip": "Regions defined so far; this region is appended "
                                                              "after them."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt=None):
        if isinstance(prompt, str):
            try:
                _check_prompt(prompt.strip())
            except VideoGrainInputError as e:
                return str(e)
        return True

    def run(self, mask: torch.Tensor, prompt: str, kind: str, previous: tuple | None = None):
        prompt = prompt.strip()
        _check_prompt(prompt)
        if kind not in KINDS:
            raise VideoGrainInputError(REGION, "kind", f"unknown kind {kind!r}", f"pick one of {', '.join(KINDS)}")
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim != 3:
            raise VideoGrainInputError(REGION, "mask", f"expected a MASK [F, H, W] or [H, W], got shape "
                                       f"{list(mask.shape)}", "connect a MASK output (e.g. VideoGrainLoadMasks)")
        if not bool((mask > 0).any()):
            raise VideoGrainInputError(REGION, "mask", f"the mask is empty (all zero) in all {mask.shape[0]} frames",
                                       "connect the mask that covers this region")
        if previous is None:
            previous = ()
        if not isinstance(previous, tuple) or not all(isinstance(r, RegionSpec) for r in previous):
            raise VideoGrainInputError(REGION, "previous", "expected the output of another VideoGrainRegion",
                                       "connect a VideoGrainRegion 'regions' output")
        # A new tuple: the upstream node's cached output is never mutated.
        return (previous + (RegionSpec(mask.detach().float().cpu(), prompt, kind),),)


def _check_prompt(prompt: str) -> None:
    """VideoGrainRegion's own checks of a local prompt: no weight syntax, a well-formed '#N' suffix."""
    if has_weight_syntax(prompt):
        raise VideoGrainInputError(REGION, "prompt", f"{prompt!r} uses weight syntax", _WEIGHT_FIX)
    try:
        split_occurrence(prompt)
    except PromptBindingError as e:
        raise VideoGrainInputError(REGION, "prompt", str(e), _OCCURRENCE_FIX) from e


def _token_key(token):
    """Hashable identity of a token: its id, or a digest of an embedding's values (`embedding:` tokens)."""
    if isinstance(token, torch.Tensor):
        data = token.detach().float().cpu().contiguous().numpy().tobytes()
        return ("embedding", hashlib.sha1(data).hexdigest())
    return int(token)


def _tokenize(clip, text: str):
    """Tokenise with the graph's CLIP: (tokens to encode, first-row keys, special keys, token count, weights)."""
    tokens = clip.tokenize(text, return_word_ids=True)
    if not isinstance(tokens, dict) or len(tokens) != 1:
        raise VideoGrainInputError(LAYOUT, "clip", f"expected an SD1.5 CLIP with one text encoder, got encoders "
                                   f"{sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__}",
                                   "load an SD1.5 checkpoint (VideoGrain edits on Stable Diffusion 1.5)")
    (key, batches), = tokens.items()
    row = batches[0]
    keys = [_token_key(t[0]) for t in row]
    # Word id 0 marks BOS, EOS and padding (sd1_clip.SDTokenizer); everything else is a word token.
    specials = {k for k, t in zip(keys, row) if t[2] == 0}
    words = sum(1 for batch in batches for t in batch if t[2] != 0)
    count = max(words + 2, MAX_TOKENS + 1) if len(batches) > 1 else words + 2
    weights = [t[1] for batch in batches for t in batch]
    to_encode = {key: [[(t[0], t[1]) for t in batch] for batch in batches]}
    return to_encode, keys, specials, count, weights


class VideoGrainLayout:
    """Splices each region's local prompt into the global prompt and builds the region layout."""

    DESCRIPTION = ("Encodes the global prompt with the graph's CLIP, replaces the words of each local prompt with "
                   "that prompt's own encoding (so 'Iron Man' and 'Spiderman' do not blend), and builds the layout "
                   "that VideoGrainApplySTLayout and the sampler use: each region's masks at every latent size and "
                   "which text tokens belong to it. With no regions connected the edit is global: no attention "
                   "modulation and no background preservation. The region check (server log, and the node's text "
                   "output in the queue history) lists how many attention cells each region owns at every level "
                   "and warns about a region that owns none at a modulated level.")
    CATEGORY = "VideoGrain/edit"
    FUNCTION = "run"
    RETURN_TYPES = ("CONDITIONING", "VIDEOGRAIN_LAYOUT")
    RETURN_NAMES = ("positive", "layout")
    OUTPUT_TOOLTIPS = (
        "The global prompt with the local prompts spliced in, for the sampler's positive input. ControlNets "
        "applied to it still see the unspliced global prompt, as in the official code.",
        "Region masks and token ownership, for VideoGrainApplySTLayout and the sampler.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP", {"tooltip": "The CLIP of your SD1.5 checkpoint (after any LoRA or clip skip)."}),
                "global_prompt": ("STRING", {"multiline": True, "dynamicPrompts": False,
                                             "tooltip": "The target prompt for the whole video; every local prompt "
                                                        "must appear in it word for word. At most 77 tokens."}),
                "latent": ("LATENT", {"tooltip": "The encoded frames (VAEEncode): gives the frame count and size "
                                                 "the masks must match."}),
            },
            "optional": {
                "regions": ("VIDEOGRAIN_REGION", {"tooltip": "The chained VideoGrainRegion nodes. Leave unconnected "
                                                             "for a global edit."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 0.99, "step": 0.01,
                                        "tooltip": "Mask values above this are inside a region. 0.5 suits binary "
                                                   "and feathered masks; 0 is the official '> 0'."}),
                "downsample": (list(DOWNSAMPLE_RULES), {"default": DEFAULT_DOWNSAMPLE, "tooltip":
                               "How region masks are brought from the latent to the smaller attention levels. "
                               "nearest_rescue: the official nearest resize, except that a region nearest would "
                               "leave without any cell in a frame (a thin part such as sunglasses) gets its "
                               "best-covered cells there, so its prompt can still be localised. nearest: the "
                               "official resize alone (such regions are dropped at those levels; the node warns). "
                               "area: a cell belongs to a region covering at least half of it, plus the same "
                               "rescue (truer shapes, but not the official masks)."}),
                "binding": (list(BINDING_RULES), {"default": DEFAULT_BINDING, "tooltip":
                            "Which occurrence a local prompt binds to when its words occur more than once in the "
                            "global prompt. next_free: the earliest occurrence that leaves every other local prompt "
                            "free words ('Iron Man' and 'man' in 'Iron Man and gray man' both bind). first: always "
                            "the first occurrence, overlaps are an error (official). A region prompt ending in "
                            "'#N' ('man#2') takes the N-th occurrence under either rule."}),
            },
        }

    def run(self, clip, global_prompt: str, latent: dict, regions: tuple | None = None, threshold: float = 0.5,
            downsample: str = DEFAULT_DOWNSAMPLE, binding: str = DEFAULT_BINDING):
        regions = () if regions is None else regions
        if not isinstance(regions, tuple) or not all(isinstance(r, RegionSpec) for r in regions):
            raise VideoGrainInputError(LAYOUT, "regions", "expected the output of VideoGrainRegion",
                                       "connect the last VideoGrainRegion of the chain")
        samples = latent.get("samples") if isinstance(latent, dict) else None
        if not isinstance(samples, torch.Tensor) or samples.ndim != 4:
            raise VideoGrainInputError(LAYOUT, "latent", "expected an image LATENT with samples [F, 4, h, w]",
                                       "connect the VAEEncode of the frames")
        for name, value, allowed in (("downsample", downsample, DOWNSAMPLE_RULES), ("binding", binding, BINDING_RULES)):
            if value not in allowed:
                raise VideoGrainInputError(LAYOUT, name, f"unknown value {value!r}", f"pick one of {list(allowed)}")
        frames, lat_h, lat_w = samples.shape[0], samples.shape[2], samples.shape[3]
        # Cheap checks first (tokenising, masks); the CLIP encodes run last.
        notes: list[str] = []
        g_tokens, local, spans = self._bind(clip, global_prompt, regions, binding, notes)
        layout = self._layout(regions, frames, (lat_h, lat_w), threshold, token_bits(spans), downsample)
        report = self._report(layout, notes)
        plain, pooled = clip.encode_from_tokens(g_tokens, return_pooled=True)
        if plain.ndim != 3 or plain.shape[:2] != (1, MAX_TOKENS):
            raise VideoGrainInputError(LAYOUT, "clip", f"the CLIP returned an embedding of shape {list(plain.shape)}, "
                                       f"expected [1, {MAX_TOKENS}, C]", "use an SD1.5 CLIP")
        local_embs = [clip.encode_from_tokens(tokens) if span is not None else None
                      for tokens, span in zip(local, spans)]
        # The UNet gets the spliced prompt; core ControlNets read "cross_attn_controlnet" (model_base.extra_conds,
        # controlnet.get_control) and so see the plain global prompt, as in the official pipeline (docs/design.md §4.5).
        positive = [[splice(plain, local_embs, spans), {"pooled_output": pooled, "cross_attn_controlnet": plain}]]
        return {"ui": {"text": [report]}, "result": (positive, layout)}

    @staticmethod
    def _report(layout: RegionLayout, notes: list[str]) -> str:
        """The region check and binding notes: logged, and returned as the node's UI text."""
        lines, warnings = region_report(layout)
        for line in lines:
            _log.info("VideoGrainLayout: %s", line)
        for warning in warnings:
            _log.warning("VideoGrainLayout: %s", warning)
        shown = [f"WARNING: {w}" for w in warnings] + [f"NOTE: {n}" for n in notes] + lines
        return "\n".join(shown) if shown else "no regions: global edit"

    @staticmethod
    def _layout(regions: tuple, frames: int, latent_size: tuple[int, int], threshold: float,
                bits: torch.Tensor, downsample: str = DEFAULT_DOWNSAMPLE) -> RegionLayout:
        lat_h, lat_w = latent_size
        masks = []
        for k, spec in enumerate(regions):
            m = spec.mask
            if m.shape[0] == 1 and frames > 1:
                m = m.expand(frames, -1, -1)  # one mask for every frame (documented on the input)
            if m.shape[0] != frames:
                raise VideoGrainInputError(LAYOUT, "regions", f"{_label(k, spec)} has a mask of {m.shape[0]} frames "
                                           f"but the latent has {frames}",
                                           "give the region one mask per frame (or a single mask for all frames)")
            if tuple(m.shape[1:]) != (8 * lat_h, 8 * lat_w):
                raise VideoGrainInputError(LAYOUT, "regions", f"{_label(k, spec)} has masks of {m.shape[2]}x"
                                           f"{m.shape[1]} pixels but the latent is {lat_w}x{lat_h}, i.e. frames of "
                                           f"{8 * lat_w}x{8 * lat_h}",
                                           "resize the masks exactly like the frames (VideoGrainLoadMasks does)")
            masks.append(m)
        try:
            return build_layout(masks, [_name(k, r) for k, r in enumerate(regions)], [r.prompt for r in regions],
                                [r.kind for r in regions], latent_size, threshold=threshold, token_bits=bits,
                                frames=frames, downsample=downsample)
        except LayoutError as e:
            raise VideoGrainInputError(LAYOUT, "regions", str(e),
                                       "check the region masks (non-empty, same size as the frames) or lower "
                                       "'threshold'") from e

    @staticmethod
    def _bind(clip, global_prompt: str, regions: tuple, rule: str = DEFAULT_BINDING, notes: list[str] | None = None):
        """Tokenise every prompt and find each local prompt's span; returns (global tokens, local tokens, spans)."""
        if clip is None:
            raise VideoGrainInputError(LAYOUT, "clip", "no CLIP connected", "connect the checkpoint's CLIP output")
        g_tokens, g_keys, specials, g_count, g_weights = _tokenize(clip, global_prompt)
        try:
            texts = [split_occurrence(r.prompt)[0] for r in regions]
        except PromptBindingError as e:  # the region node refuses these already; a backstop
            raise VideoGrainInputError(LAYOUT, "regions", str(e), _OCCURRENCE_FIX) from e
        local = [_tokenize(clip, text) for text in texts]
        for k, (spec, entry) in enumerate(zip(regions, local)):
            if any(w != 1.0 for w in entry[4]):  # backstop: the tokenizer parsed a weight
                raise VideoGrainInputError(LAYOUT, "regions", f"{_label(k, spec)} uses weight syntax", _WEIGHT_FIX)
            specials |= entry[2]
        try:
            spans = bind_prompts(global_prompt, g_keys, [r.prompt for r in regions], [e[1] for e in local], specials,
                                 global_tokens=g_count, local_tokens=[e[3] for e in local], rule=rule, notes=notes)
        except PromptBindingError as e:
            raise _binding_error(e, regions, rule) from e
        for spec, span in zip(regions, spans):
            if span is not None and any(w != 1.0 for w in g_weights[span[0]:span[0] + span[1]]):
                # The spliced rows come from the unweighted local encoding, so the weight is dropped there.
                _log.warning("VideoGrain: the global prompt weights the words of local prompt %r; the splice "
                             "replaces them with the local prompt's unweighted encoding", spec.prompt)
        return g_tokens, [e[0] for e in local], spans


def _binding_error(e: PromptBindingError, regions: tuple, rule: str) -> VideoGrainInputError:
    if e.index is None:
        return VideoGrainInputError(LAYOUT, "global_prompt", str(e), "shorten the global prompt")
    overlap = "give each region a different phrase of the global prompt, or pick another occurrence with '#N' " \
              "(e.g. 'man#2') if the phrase occurs again"
    fixes = {
        "not_found": "make the region's prompt a word-for-word phrase of the global prompt (or add it there), or "
                     "leave the prompt empty",
        "overlap": overlap + (", or set 'binding' to next_free" if rule != "next_free" else ""),
        "occurrence": "in the VideoGrainRegion prompt, use a '#N' no larger than the number of times its words occur "
                      "in the global prompt, or remove the suffix",
        "too_long": "shorten the local prompt",
        "weights": _WEIGHT_FIX,
    }
    return VideoGrainInputError(LAYOUT, "regions", f"region {e.index + 1} ({regions[e.index].kind}): {e}", fixes[e.kind])


NODE_CLASS_MAPPINGS = {REGION: VideoGrainRegion, LAYOUT: VideoGrainLayout}
NODE_DISPLAY_NAME_MAPPINGS = {REGION: "VideoGrain Region", LAYOUT: "VideoGrain Layout"}
