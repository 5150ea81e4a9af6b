"""Fixes from a hostile probe of the pack through the real server: path confinement, reproducible video
files, decode errors in frame folders, the real DDIM step count, one rule for every mask source, empty
filename prefixes, odd sizes, oversized loads, and clean error messages."""
from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

LOAD, SAVE = "VideoGrainLoadVideo", "VideoGrainSaveVideo"
DEMO = "videograin_demo/clip.mp4"


def load(video=DEMO, cap=2, width=128, height=0, path=None) -> dict:
    inputs = {"video": video, "frame_load_cap": cap, "skip_first_frames": 0, "select_every_nth": 1,
              "size_mode": "keep_aspect", "width": width, "height": height}
    if path is not None:
        inputs["path"] = path
    return {"class_type": LOAD, "inputs": inputs}


def save(images, prefix, fmt="mp4 (h264)", fps=8.0) -> dict:
    return {"class_type": SAVE, "inputs": {"images": images, "fps": fps, "filename_prefix": prefix,
                                           "format": fmt, "crf": 19}}


@pytest.fixture()
def scratch(comfy_server):
    """A fresh folder inside the input folder and one outside every ComfyUI folder."""
    inside = Path(comfy_server.input_dir) / f"vg-hard-{uuid.uuid4().hex[:8]}"
    outside = Path(comfy_server.output_dir).parent / f"elsewhere-{uuid.uuid4().hex[:8]}"
    inside.mkdir(parents=True)
    outside.mkdir(parents=True)
    shutil.copy(Path(comfy_server.input_dir) / DEMO, outside / "clip.mp4")
    try:
        yield inside, outside
    finally:
        shutil.rmtree(inside, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


# --- 1. path confinement ----------------------------------------------------------------------------

def test_list_values_cannot_leave_the_input_folder(comfy, comfy_server, scratch):
    inside, outside = scratch
    escape = os.path.relpath(outside / "clip.mp4", comfy_server.input_dir)
    assert escape.startswith("..")
    message = comfy.run_expect_error({"1": load(video=escape), "2": save(["1", 0], "vg_hard/escape")})
    assert "Value not in list" in message
    # A symlink inside the input folder that points out of it is not offered either.
    (inside / "link.mp4").symlink_to(outside / "clip.mp4")
    combo = comfy.object_info(LOAD)["input"]["required"]["video"][0]
    assert f"{inside.name}/link.mp4" not in combo and DEMO in combo
    message = comfy.run_expect_error({"1": load(video=f"{inside.name}/link.mp4"), "2": save(["1", 0], "vg_hard/l")})
    assert "Value not in list" in message


@pytest.fixture(scope="module")
def confined(tmp_path_factory, host_paths, server_module):
    """A second server with VIDEOGRAIN_CONFINE_PATHS=1, as for a server shared on a network."""
    root = tmp_path_factory.mktemp("confined")
    server = server_module.ComfyServer(host_paths, output_dir=root / "output", temp_dir=root / "temp",
                                       log_path=root / "comfyui.log", env={"VIDEOGRAIN_CONFINE_PATHS": "1"})
    server.start()
    import comfy_client
    try:
        yield comfy_client.ComfyClient(server.url, server.output_dir, server.temp_dir), server
    finally:
        server.stop()


def test_free_paths_are_confined_on_a_shared_server(confined, scratch, comfy):
    client, server = confined
    _, outside = scratch
    message = client.run_expect_error({"1": load(path=str(outside / "clip.mp4")), "2": save(["1", 0], "vg/out")})
    assert "VideoGrainLoadVideo input 'path'" in message and "VIDEOGRAIN_CONFINE_PATHS" in message
    message = client.run_expect_error({"1": load(), "3": {"class_type": "VideoGrainLoadMasks", "inputs": {
        "images": ["1", 0], "masks_path": str(outside), "size_mode": "keep_aspect", "frame_load_cap": 2,
        "skip_first_frames": 0, "select_every_nth": 1, "threshold": 0.5}},
        "4": {"class_type": "VideoGrainMaskOverlay", "inputs": {"images": ["1", 0], "region_masks": ["3", 0],
                                                                "opacity": 0.5}},
        "2": save(["4", 0], "vg/masks")})
    assert "VideoGrainLoadMasks input 'masks_path'" in message and "outside" in message
    # Inside the input folder, the free path still works there; and the local server is not confined.
    inside = str(Path(server.input_dir) / DEMO)
    assert client.run({"1": load(path=inside), "2": save(["1", 0], "vg/in")})
    assert comfy.run({"1": load(path=str(outside / "clip.mp4")), "2": save(["1", 0], "vg_hard/local")})


# --- 2. reproducible files ----------------------------------------------------------------------------

def test_saving_the_same_frames_twice_gives_identical_bytes(comfy):
    prompt = {"1": load(cap=6, width=192)}
    formats = {"mp4": "mp4 (h264)", "webp": "webp", "gif": "gif"}
    for name, fmt in formats.items():
        for copy in "ab":
            prompt[f"{name}{copy}"] = save(["1", 0], f"vg_hard/same_{name}_{copy}", fmt)
    outputs = comfy.run(prompt)
    for name in formats:
        a, b = (comfy.output_files(outputs[f"{name}{c}"])[0].read_bytes() for c in "ab")
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), name


# --- 3. decode errors inside frame folders -----------------------------------------------------------

def test_a_damaged_frame_or_mask_image_is_a_named_error(comfy, scratch):
    inside, _ = scratch
    frames, masks = inside / "frames", inside / "masks" / "thing"
    frames.mkdir()
    masks.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(frames / f"{i}.png")
        Image.fromarray(np.where(np.arange(64)[:, None] < 32, 255, 0).astype(np.uint8).repeat(64, 1)).save(
            masks / f"{i}.png")
    for bad in (frames / "2.png", masks / "3.png"):
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])  # truncated: the header reads, the pixels do not
    message = comfy.run_expect_error({"1": load(video=f"{inside.name}/frames", cap=0, width=0),
                                      "2": save(["1", 0], "vg_hard/damaged")})
    assert "VideoGrainLoadVideo input 'video'" in message and "2.png" in message and "Fix:" in message
    assert "Traceback" not in message
    good = {"1": load(cap=4, width=64, height=64), "3": {"class_type": "VideoGrainLoadMasks", "inputs": {
        "images": ["1", 0], "masks_path": f"{inside.name}/masks", "size_mode": "crop", "frame_load_cap": 4,
        "skip_first_frames": 0, "select_every_nth": 1, "threshold": 0.5}},
        "4": {"class_type": "VideoGrainMaskOverlay", "inputs": {"images": ["1", 0], "region_masks": ["3", 0],
                                                                "opacity": 0.5}},
        "2": save(["4", 0], "vg_hard/damaged_masks")}
    good["1"]["inputs"]["size_mode"] = "crop"
    message = comfy.run_expect_error(good)
    assert "VideoGrainLoadMasks input 'masks_path'" in message and "3.png" in message and "Fix:" in message


# --- 4. the real step count ----------------------------------------------------------------------------

def test_a_changed_step_count_is_warned_and_run(comfy, tiny_model):
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_model}},
        "2": load(cap=2, width=64, height=64),
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "VideoGrainInvert", "inputs": {"model": ["1", 0], "positive": ["4", 0],
                                                           "latent": ["3", 0], "steps": 7}},
        "6": {"class_type": "VideoGrainSampler", "inputs": {
            "model": ["1", 0], "inversion": ["5", 0], "positive": ["4", 0], "negative": ["4", 0], "cfg": 1.0,
            "steps": 7, "seed": 1, "background": "off"}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "vg_hard/steps"}},
    }
    _, progress = comfy.run_with_progress(g)
    assert any("steps=7 becomes 8" in w["message"] and w["node"] == "VideoGrainInvert" for w in comfy.warnings)
    sampler = [p for p in progress if p.get("node") == "6"]
    assert sampler and sampler[-1]["max"] == 8  # the INVERSION carries the real count to the edit


# --- 5. one rule per input ----------------------------------------------------------------------------

def test_all_covering_masks_from_any_node_follow_one_rule(comfy, comfy_server, tiny_model):
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_model}},
        "2": load(cap=2, width=64, height=64),
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "20": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 64}},
        "21": {"class_type": "VideoGrainRegion", "inputs": {"mask": ["20", 0], "prompt": "forest",
                                                              "kind": "background"}},
        "7": {"class_type": "VideoGrainLayout", "inputs": {"clip": ["1", 1], "global_prompt": "a forest",
                                                           "latent": ["3", 0], "regions": ["21", 0]}},
        "8": {"class_type": "VideoGrainApplySTLayout", "inputs": {
            "model": ["1", 0], "layout": ["7", 1], "cross_strength": 1.0, "self_strength": 0.3,
            "modulated_fraction": 0.3, "levels": "below_highest", "cross_branch": "cond", "self_branch": "uncond"}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "VideoGrainInvert", "inputs": {"model": ["1", 0], "positive": ["9", 0],
                                                           "latent": ["3", 0], "steps": 2}},
        "10": {"class_type": "VideoGrainSampler", "inputs": {
            "model": ["8", 0], "inversion": ["5", 0], "positive": ["7", 0], "negative": ["9", 0], "cfg": 2.0,
            "steps": 2, "seed": 1, "background": "source_noise"}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "vg_hard/solid"}},
    }
    assert comfy.run(g)  # accepted, as from VideoGrainLoadMasks (tests/unit/test_masks_load.py)
    assert "covers every latent cell" in comfy_server.log_text()


def test_empty_or_hidden_filename_prefixes_are_refused(comfy):
    for prefix in ("", "videograin/", "videograin/.hidden"):
        message = comfy.run_expect_error({"1": load(), "2": save(["1", 0], prefix)})
        assert "VideoGrainSaveVideo input 'filename_prefix'" in message and "Fix:" in message
    assert not list(Path(comfy.output_dir).glob("._*")) and not list(Path(comfy.output_dir).glob("*/._*"))


def test_odd_sizes_are_padded_for_h264_and_said(comfy):
    g = {"1": {"class_type": "EmptyImage", "inputs": {"width": 65, "height": 33, "batch_size": 2, "color": 0}},
         "2": save(["1", 0], "vg_hard/odd")}
    entry, _ = comfy.run_with_progress(g)
    (path,) = comfy.output_files(entry)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (66, 34)
    assert any("65x33" in w["message"] and "66x34" in w["message"] for w in comfy.warnings)


def test_loads_far_beyond_sd15_sizes_are_warned_with_their_memory(comfy):
    _, _ = comfy.run_with_progress({"1": load(cap=1, width=4096, height=0),
                                    "2": save(["1", 0], "vg_hard/huge", "webp")})
    [warning] = [w for w in comfy.warnings if w["node"] == LOAD]
    assert "4096x2560" in warning["message"] and "GiB" in warning["message"]


# --- 6. clean messages ---------------------------------------------------------------------------------

def test_runtime_errors_carry_a_clean_type_name(comfy):
    # A run-time error (skip past the end) reports the pack's type by its short name.
    from comfy_client import ComfyRunError
    with pytest.raises(ComfyRunError) as info:
        comfy.run_entry({"1": {**load(cap=1), "inputs": {**load(cap=1)["inputs"], "skip_first_frames": 999}},
                         "2": save(["1", 0], "vg_hard/skip")})
    assert info.value.execution_error["exception_type"] == "videograin.VideoGrainInputError"
    assert "VideoGrainLoadVideo input 'skip_first_frames'" in info.value.execution_error["exception_message"]
