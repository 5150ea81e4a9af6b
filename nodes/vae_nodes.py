"""VAE encode and decode a few frames at a time, so a clip's VAE pass stays within the edit's memory.

Core VAEEncode / VAEDecode size their batch by the free memory, so on a large card they take many
frames at once and the VAE, not the UNet, sets the workflow's peak. These nodes call the same
`vae.encode` / `vae.decode` on slices of `frames_per_chunk` frames; the VAE treats each frame on its own
either way, so decoding equals core's bit for bit and encoding to float rounding (a batched convolution
may sum in another order; tests/server/test_vae_nodes.py).
"""
from __future__ import annotations

import torch

from .errors import VideoGrainInputError, out_of_memory_hint

ENCODE, DECODE = "VideoGrainVAEEncode", "VideoGrainVAEDecode"
# Why 4 (bench/README.md, H200, 512², SD1.5): a whole 16-frame edit with 4-frame VAE calls peaks at 4.18 GiB,
# the UNet's own peak (its CFG step alone: 4.26 GiB); 8-frame calls raised the peak to 6.31 GiB and core
# VAEDecode, which takes all 16 frames at once on a large card, to 10.3 GiB (VAEEncode 6.8 GiB). The VAE's
# need grows with the frames per call and not with the clip's length, while the UNet's grows with the clip
# (6.5 GiB at 64 frames, 11 GiB at 128 with windows), so 4 keeps the workflow's peak at the UNet's for every
# clip of 16 frames or more.
CHUNK = {"default": 4, "min": 1, "max": 4096, "tooltip":
         "Frames per VAE call. The VAE's GPU memory grows with this number, not with the clip's length. 4 keeps "
         "the whole workflow's peak at the UNet's own (512², 16 frames on an H200: 4.18 GiB with 4, 6.31 GiB with "
         "8, 10.3 GiB for core VAE Decode taking all frames at once). Lower it for frames above 512² on small "
         "cards; higher is a little faster."}
OOM_FIX = "lower frames_per_chunk"


def _chunked(fn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """fn over slices of `chunk` frames, concatenated; progress and interrupts between slices."""
    import comfy.model_management
    from comfy.utils import ProgressBar

    parts, pbar = [], ProgressBar(-(-x.shape[0] // chunk))
    for start in range(0, x.shape[0], chunk):
        comfy.model_management.throw_exception_if_processing_interrupted()
        parts.append(fn(x[start:start + chunk]))
        pbar.update(1)
    return torch.cat(parts)


class VideoGrainVAEEncode:
    DESCRIPTION = ("Encodes the frames with the VAE a few frames at a time (same result as core VAE Encode, "
                   "bounded memory): for long clips and for cards smaller than the VAE's appetite.")
    CATEGORY = "VideoGrain/io"
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The frames' latent, as core VAE Encode gives it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pixels": ("IMAGE", {"tooltip": "The frames to encode."}),
            "vae": ("VAE", {"tooltip": "The checkpoint's VAE."}),
            "frames_per_chunk": ("INT", CHUNK),
        }}

    def encode(self, pixels, vae, frames_per_chunk):
        if pixels.ndim != 4 or pixels.shape[0] == 0:
            raise VideoGrainInputError(ENCODE, "pixels", f"expected frames [F, H, W, C], got {tuple(pixels.shape)}",
                                       "connect the IMAGE output of VideoGrainLoadVideo")
        with out_of_memory_hint(ENCODE, "frames_per_chunk", OOM_FIX):
            samples = _chunked(lambda x: vae.encode(x[..., :3]), pixels, frames_per_chunk)
        return ({"samples": samples},)


class VideoGrainVAEDecode:
    DESCRIPTION = ("Decodes a latent with the VAE a few frames at a time (same result as core VAE Decode, "
                   "bounded memory), so decoding an edit needs no more GPU memory than the edit itself.")
    CATEGORY = "VideoGrain/io"
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The decoded frames, as core VAE Decode gives them.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT", {"tooltip": "The latent to decode (VideoGrainSampler's output)."}),
            "vae": ("VAE", {"tooltip": "The checkpoint's VAE."}),
            "frames_per_chunk": ("INT", CHUNK),
        }}

    def decode(self, samples, vae, frames_per_chunk):
        latent = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(latent, torch.Tensor) or latent.ndim != 4:
            raise VideoGrainInputError(DECODE, "samples", "expected an image LATENT [F, 4, h, w]",
                                       "connect VideoGrainSampler's latent")
        with out_of_memory_hint(DECODE, "frames_per_chunk", OOM_FIX):
            images = _chunked(vae.decode, latent, frames_per_chunk)
        return (images,)


NODE_CLASS_MAPPINGS = {ENCODE: VideoGrainVAEEncode, DECODE: VideoGrainVAEDecode}
NODE_DISPLAY_NAME_MAPPINGS = {ENCODE: "VideoGrain VAE Encode (chunked)", DECODE: "VideoGrain VAE Decode (chunked)"}
