"""A tiny instance-edit test case shared by server tests: a red square moving over a grey-green gradient,
written as a frame folder, and the edit graph around it (its red channel is the region mask, through
core ImageToMask, so the edit has one region plus background)."""
from __future__ import annotations

import contextlib
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file


@contextlib.contextmanager
def red_square_clip(input_dir: str, frames: int, width: int, height: int, step: int, tag: str):
    """A folder of `frames` PNGs in `input_dir` (the square moves `step` px per frame); yields its name."""
    root = Path(input_dir) / f"vg-{tag}-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    for i in range(frames):
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 1] = np.linspace(40, 200, width, dtype=np.uint8)[None, :]
        x = 4 + step * i
        img[height // 4:3 * height // 4, x:x + 24] = (255, 0, 0)
        Image.fromarray(img).save(root / f"{i:03d}.png")
    try:
        yield root.name
    finally:
        shutil.rmtree(root, ignore_errors=True)


def edit_graph(ckpt: str, clip: str, steps: int, prefix: str, invert_model=("1", 0), edit_model=("1", 0),
               cache: str | None = None) -> dict:
    """Load → encode → layout "a blue ball" over the square → invert → ST-Layout → sample → SaveLatent ("11").

    `invert_model` / `edit_model` are the model links of VideoGrainInvert / VideoGrainApplySTLayout (the
    caller adds the nodes they name); node "9" is the empty negative, "1" the checkpoint loader.
    """
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": clip, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1,
            "size_mode": "keep_aspect", "width": 0, "height": 0}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red square", "clip": ["1", 1]}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "20": {"class_type": "ImageToMask", "inputs": {"image": ["2", 0], "channel": "red"}},
        "21": {"class_type": "VideoGrainRegion", "inputs": {"mask": ["20", 0], "prompt": "blue ball",
                                                              "kind": "instance"}},
        "7": {"class_type": "VideoGrainLayout", "inputs": {"clip": ["1", 1], "global_prompt": "a blue ball",
                                                           "latent": ["3", 0], "regions": ["21", 0]}},
        "5": {"class_type": "VideoGrainInvert", "inputs": {"model": list(invert_model), "positive": ["4", 0],
                                                           "latent": ["3", 0], "steps": steps}},
        "8": {"class_type": "VideoGrainApplySTLayout", "inputs": {
            "model": list(edit_model), "layout": ["7", 1], "cross_strength": 1.0, "self_strength": 0.3,
            "modulated_fraction": 0.5, "levels": "below_highest", "cross_branch": "cond", "self_branch": "both"}},
        "10": {"class_type": "VideoGrainSampler", "inputs": {
            "model": ["8", 0], "inversion": ["5", 0], "positive": ["7", 0], "negative": ["9", 0], "cfg": 7.5,
            "steps": steps, "seed": 42, "background": "source_noise"}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": prefix}},
    }
    if cache is not None:
        g["5"]["inputs"]["cache"] = cache
    return g


def edited_latent(comfy, outputs):
    """The latent SaveLatent ("11") wrote, as float."""
    (path,) = comfy.output_files(outputs["11"])
    return load_file(str(path))["latent_tensor"].float()
