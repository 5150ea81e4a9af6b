"""Temporal windows through the real server (docs/design.md §16), tiny model, a 24-frame clip.

The clip is a frame folder written here: a red square moving over a grey gradient; its red channel is
the region mask (core ImageToMask), so the edit has one region plus background.
"""
from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

FRAMES, W, H, STEPS = 24, 128, 64, 3


@pytest.fixture(scope="module")
def clip(comfy_server):
    root = Path(comfy_server.input_dir) / f"vg-windows-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    for i in range(FRAMES):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 1] = np.linspace(40, 200, W, dtype=np.uint8)[None, :]
        x = 4 + 4 * i
        img[16:48, x:x + 24] = (255, 0, 0)
        Image.fromarray(img).save(root / f"{i:03d}.png")
    try:
        yield root.name
    finally:
        shutil.rmtree(root, ignore_errors=True)


def graph(ckpt: str, clip: str, windows: tuple[int, int, int] | None, prefix: str) -> dict:
    model = ["1", 0]
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
    }
    if windows is not None:
        g["30"] = {"class_type": "VideoGrainTemporalWindows", "inputs": {
            "model": ["1", 0], "window": windows[0], "overlap": windows[1], "anchors": windows[2]}}
        model = ["30", 0]
    g["5"] = {"class_type": "VideoGrainInvert", "inputs": {"model": model, "positive": ["4", 0],
                                                           "latent": ["3", 0], "steps": STEPS}}
    g["8"] = {"class_type": "VideoGrainApplySTLayout", "inputs": {
        "model": model, "layout": ["7", 1], "cross_strength": 1.0, "self_strength": 0.3,
        "modulated_fraction": 0.5, "levels": "below_highest", "cross_branch": "cond", "self_branch": "both"}}
    g["10"] = {"class_type": "VideoGrainSampler", "inputs": {
        "model": ["8", 0], "inversion": ["5", 0], "positive": ["7", 0], "negative": ["9", 0], "cfg": 7.5,
        "steps": STEPS, "seed": 42, "background": "source_noise"}}
    g["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": prefix}}
    return g


def edited(comfy, outputs) -> torch.Tensor:
    (path,) = comfy.output_files(outputs["11"])
    return load_file(str(path))["latent_tensor"].float()


def test_windowed_edit_of_24_frames_runs_and_a_covering_window_equals_full_attention(comfy, tiny_model, clip):
    full = edited(comfy, comfy.run(graph(tiny_model, clip, None, "vg_windows/full")))
    covering = edited(comfy, comfy.run(graph(tiny_model, clip, (FRAMES, 0, 0), "vg_windows/covering")))
    windowed = edited(comfy, comfy.run(graph(tiny_model, clip, (8, 2, 1), "vg_windows/w8")))
    assert full.shape[0] == windowed.shape[0] == FRAMES
    assert torch.equal(covering, full)  # W >= F is exactly full space-time attention
    assert torch.isfinite(windowed).all() and (windowed - full).abs().max() > 1e-4


@pytest.mark.parametrize("windows,needle", [
    ((8, 8, 0), "VideoGrainTemporalWindows input 'overlap'"),
    ((8, 2, 30), "VideoGrainTemporalWindows input 'anchors'"),
])
def test_bad_windows_are_named_errors(comfy, tiny_model, clip, windows, needle):
    message = comfy.run_expect_error(graph(tiny_model, clip, windows, "vg_windows/bad"))
    assert needle in message and "Fix:" in message
