"""Optical flow and trajectory attention through the real server (docs/design.md §10, §10.1).

- the flow node gives F-1 flows and a colour preview on the bundled clip; the trajectory node reports its grids;
- with trajectory attention on, inversion → reconstruction with the source prompt still round-trips, and
  both the inversion and the edit differ from the same run without it (the patch is active in both);
- a flow of another frame count or size, or an unknown resolution, is a named error before any UNet call.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from test_inversion_sampler import FRAMES, SIZE, _base, _invert, _latent, _rel, _sample, _save_latent, clip_name  # noqa: F401

CLIP_FRAMES = 4


def _flow(images, method="dis") -> dict:
    return {"class_type": "VideoGrainOpticalFlow", "inputs": {"images": list(images), "method": method,
                                                               "dis_preset": "medium"}}


def _trajectory(model, flow, resolutions="64", layout="chain") -> dict:
    return {"class_type": "VideoGrainTrajectoryAttention", "inputs": {
        "model": list(model), "flow": list(flow), "resolutions": resolutions, "seed": 0, "slot_layout": layout}}


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_of_the_bundled_clip_and_trajectory_report(comfy, tiny_model, method):
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_model}},
        "2": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": CLIP_FRAMES, "skip_first_frames": 0,
            "select_every_nth": 1, "size_mode": "keep_aspect", "width": 256, "height": 256}},
        "3": _flow(("2", 0), method),
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": f"vg_flow_{method}"}},
        "5": _trajectory(("1", 0), ("3", 0), "64+32+16"),
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 1]}},
        "7": {"class_type": "GetImageSize", "inputs": {"image": ["2", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["7", 1]}},
    }
    out = comfy.run(g, timeout=240)
    previews = comfy.output_files(out["4"])
    assert len(previews) == CLIP_FRAMES - 1
    first = np.asarray(Image.open(previews[0]))
    assert first.std() > 1.0, "the clip moves: the preview must not be uniform"
    report = out["6"]["text"][0].splitlines()
    width, height = int(out["8"]["text"][0]), int(out["9"]["text"][0])
    assert len(report) == 3  # 64, 32, 16 in the official names = latent grid, then halved twice
    assert report[0].startswith(f"{height // 8}x{width // 8}:") and f"{CLIP_FRAMES} frames" in report[0]
    assert report[1].startswith(f"{(height // 8 + 1) // 2}x{(width // 8 + 1) // 2}:")


def _reconstruction_graph(ckpt: str, clip: str, steps: int) -> dict:
    """test_invert_then_reconstruct's graph (latent ×300, UNet weights ×0.35), see its docstring."""
    g = _base(ckpt, clip)
    g.update({
        "6": {"class_type": "LatentMultiply", "inputs": {"samples": ["3", 0], "multiplier": 10.0}},
        "7": {"class_type": "LatentMultiply", "inputs": {"samples": ["6", 0], "multiplier": 10.0}},
        "8": {"class_type": "LatentMultiply", "inputs": {"samples": ["7", 0], "multiplier": 3.0}},
        "10": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["1", 0], "model2": ["1", 0], "multiplier": 1.0}},
        "11": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["10", 0], "ratio": 0.35}},
        "16": _save_latent(("8", 0), "vg_traj_source"),
    })
    return g


def test_trajectory_attention_round_trips_and_is_active_in_inversion_and_edit(comfy, tiny_model, clip_name):  # noqa: F811 (the imported fixture)
    steps = 10
    g = _reconstruction_graph(tiny_model, clip_name, steps)
    g.update({
        "30": _flow(("2", 0)),
        "31": _trajectory(("11", 0), ("30", 0), "64+32+16"),
        "32": _invert(("31", 0), ("8", 0), steps),
        "33": _sample(("31", 0), ("32", 0), 1.0, steps, "off", negative=("4", 0)),
        "34": _save_latent(("32", 1), "vg_traj_noisy"),
        "35": _save_latent(("33", 0), "vg_traj_recon"),
        "36": _invert(("11", 0), ("8", 0), steps),
        "37": _save_latent(("36", 1), "vg_traj_noisy_plain"),
        # the undamped model: the inversion and the edit from the same inversion, with and without
        "42": _trajectory(("1", 0), ("30", 0), "64+32+16"),
        "43": _invert(("42", 0), ("3", 0), steps),
        "44": _invert(("1", 0), ("3", 0), steps),
        "45": _save_latent(("43", 1), "vg_traj_noisy_full"),
        "46": _save_latent(("44", 1), "vg_traj_noisy_full_plain"),
        "38": _sample(("42", 0), ("44", 0), 4.0, steps, "off"),
        "39": _sample(("1", 0), ("44", 0), 4.0, steps, "off"),
        "40": _save_latent(("38", 0), "vg_traj_edit"),
        "41": _save_latent(("39", 0), "vg_traj_edit_plain"),
    })
    out = comfy.run(g, timeout=300)
    source, noisy, recon, noisy_plain, edit, edit_plain, full, full_plain = (
        _latent(comfy, out, n) for n in ("16", "34", "35", "37", "40", "41", "45", "46"))
    assert recon.shape == source.shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    error, moved = _rel(recon, source), _rel(noisy, source)
    damped_change = _rel(noisy, noisy_plain)
    inversion_change, edit_change = _rel(full, full_plain), _rel(edit, edit_plain)
    print(f"trajectory attention: moved {moved:.3f}, reconstruction error {error:.4f}; damped inversion changed "  # noqa: T201
          f"by {damped_change:.2e}; full-scale inversion by {inversion_change:.2e}, edit by {edit_change:.2e}")
    assert moved > 0.15
    assert error < 0.35 * moved
    assert inversion_change > 1e-3, "trajectory attention did not reach the inversion"
    assert edit_change > 1e-3, "trajectory attention did not reach the edit"


@pytest.mark.parametrize("case", ["frames", "size"])
def test_flow_of_other_frames_is_a_named_error(comfy, tiny_model, clip_name, case):  # noqa: F811 (the imported fixture)
    g = _base(tiny_model, clip_name)
    if case == "frames":
        g["20"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": 2}}
    else:
        g["20"] = {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "nearest-exact",
                                                          "width": 2 * SIZE, "height": SIZE, "crop": "disabled"}}
    g.update({"30": _flow(("20", 0)), "31": _trajectory(("1", 0), ("30", 0)),
              "32": _invert(("31", 0), ("3", 0), 2), "33": _save_latent(("32", 1), f"vg_traj_bad_{case}")})
    message = comfy.run_expect_error(g)
    assert "VideoGrainTrajectoryAttention input 'flow'" in message and "Fix:" in message
    if case == "frames":
        assert "2 frames" in message and f"{FRAMES}" in message
    else:
        assert f"{SIZE // 8}x{SIZE // 8}" in message


def test_unknown_resolution_is_refused(comfy, tiny_model, clip_name):  # noqa: F811 (the imported fixture)
    g = _base(tiny_model, clip_name)
    g.update({"30": _flow(("2", 0)), "31": _trajectory(("1", 0), ("30", 0), "64+32+16+8"),
              "32": _invert(("31", 0), ("3", 0), 2), "33": _save_latent(("32", 1), "vg_traj_bad_res")})
    message = comfy.run_expect_error(g)
    assert "resolutions" in message and "64+32+16+8" in message
