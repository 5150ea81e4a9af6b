"""Temporal windows through the real server (docs/design.md §16), tiny model, a 24-frame clip.

The clip is a frame folder written here: a red square moving over a grey gradient; its red channel is
the region mask (core ImageToMask), so the edit has one region plus background.
"""
from __future__ import annotations

import pytest
import torch
from red_square import edit_graph, red_square_clip
from red_square import edited_latent as edited

FRAMES, W, H, STEPS = 24, 128, 64, 3


@pytest.fixture(scope="module")
def clip(comfy_server):
    with red_square_clip(comfy_server.input_dir, FRAMES, W, H, step=4, tag="windows") as name:
        yield name


def graph(ckpt: str, clip: str, windows: tuple[int, int, int] | None, prefix: str) -> dict:
    model = ("1", 0)
    if windows is not None:
        model = ("30", 0)
    g = edit_graph(ckpt, clip, STEPS, prefix, invert_model=model, edit_model=model)
    if windows is not None:
        g["30"] = {"class_type": "VideoGrainTemporalWindows", "inputs": {
            "model": ["1", 0], "window": windows[0], "overlap": windows[1], "anchors": windows[2]}}
    return g


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
