"""VideoGrainAutoRegions through the real server on the bundled clip: K masks that partition every
frame at the frames' size, a summary, and errors naming node, input and fix.

The tiny test model's random self-attention carries no object information (with attn1 q/k ×4 the
clusters scored IoU 0.44 / 0.04 / 0.04 against background / left / right figure), so recovering the
figures is asserted on the same path with a deterministic feature fixture instead:
tests/unit/test_auto_regions_fixture.py."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

FRAMES, STEPS, SIZE = 2, 3, 256
TRUTH = ("background", "left_figure", "right_figure")


def auto_graph(ckpt: str, k: int = 3, frames: int = FRAMES, size: int = SIZE) -> dict:
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": frames, "skip_first_frames": 0,
            "select_every_nth": 1, "size_mode": "keep_aspect", "width": size, "height": size}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "two people walking", "clip": ["1", 1]}},
        "5": {"class_type": "VideoGrainAutoRegions", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "latent": ["3", 0], "images": ["2", 0],
            "steps": STEPS, "k": k, "seed": 0}},
        "6": {"class_type": "VideoGrainLoadMasks", "inputs": {
            "images": ["2", 0], "masks_path": "videograin_demo/masks", "size_mode": "keep_aspect",
            "frame_load_cap": frames, "skip_first_frames": 0, "select_every_nth": 1, "threshold": 0.5,
            "source_width": ["2", 4], "source_height": ["2", 5]}},
        "7": {"class_type": "PreviewAny", "inputs": {"source": ["5", 2]}},
    }
    for j in range(k):
        g[f"1{j}s"] = {"class_type": "VideoGrainSelectMask", "inputs": {"region_masks": ["5", 0],
                                                                         "name": f"region_{j + 1}"}}
        g[f"1{j}i"] = {"class_type": "MaskToImage", "inputs": {"mask": [f"1{j}s", 0]}}
        g[f"1{j}"] = {"class_type": "SaveImage", "inputs": {"images": [f"1{j}i", 0],
                                                            "filename_prefix": f"vg_auto/region_{j + 1}"}}
    for t, name in enumerate(TRUTH):
        g[f"2{t}s"] = {"class_type": "VideoGrainSelectMask", "inputs": {"region_masks": ["6", 0], "name": name}}
        g[f"2{t}i"] = {"class_type": "MaskToImage", "inputs": {"mask": [f"2{t}s", 0]}}
        g[f"2{t}"] = {"class_type": "SaveImage", "inputs": {"images": [f"2{t}i", 0],
                                                            "filename_prefix": f"vg_auto/truth_{name}"}}
    return g


def masks_of(comfy, outputs: dict, node: str) -> np.ndarray:
    files = sorted(comfy.output_files({node: outputs[node]}))
    return np.stack([np.asarray(Image.open(f).convert("L")) > 127 for f in files])


def test_automatic_regions_partition_the_frames(comfy, tiny_model):
    out = comfy.run(auto_graph(tiny_model))
    found = [masks_of(comfy, out, f"1{j}") for j in range(3)]
    truth = masks_of(comfy, out, "20")
    assert all(m.shape == truth.shape == (FRAMES, 192, 256) for m in found)
    assert np.array_equal(np.sum(found, axis=0), np.ones(truth.shape, dtype=int))  # each pixel in one region
    for m in found:  # whole 16x16-pixel cells of the 16x12 grid of the latent/2 level
        assert np.array_equal(m, np.repeat(np.repeat(m[:, ::16, ::16], 16, 1), 16, 2))
    summary = out["7"]["text"][0]
    assert "3 clusters of the 16x12 self-attention" in summary
    assert "10 branch calls averaged" in summary  # 3 steps = 2 UNet calls, each at the 5 recorded blocks
    shares = [float(line.split(": ")[1].split("%")[0]) for line in summary.splitlines()[1:]]
    assert len(shares) == 3 and abs(sum(shares) - 100) < 0.5 and min(shares) > 0


def test_a_pnp_model_gives_the_same_regions(comfy, tiny_model):
    """The short inversion behind the regions needs no PnP features: a model from VideoGrainPnP gives
    exactly the masks of the plain model (and no error about features the recording patch never sees)."""
    plain, with_pnp = auto_graph(tiny_model, frames=1, size=128), auto_graph(tiny_model, frames=1, size=128)
    for j in range(3):
        with_pnp[f"1{j}"]["inputs"]["filename_prefix"] = f"vg_auto/pnp_region_{j + 1}"
    with_pnp["9"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}}
    with_pnp["30"] = {"class_type": "VideoGrainPnP", "inputs": {"model": ["1", 0], "inject_step": 1,
                                                                "negative": ["9", 0]}}
    with_pnp["5"]["inputs"]["model"] = ["30", 0]
    a, b = comfy.run(plain), comfy.run(with_pnp)
    for j in range(3):
        assert np.array_equal(masks_of(comfy, a, f"1{j}"), masks_of(comfy, b, f"1{j}"))


@pytest.mark.parametrize("case", ["k", "frames"])
def test_bad_inputs_name_node_input_and_fix(comfy, tiny_model, case):
    if case == "k":  # 128x64 frames: latent 16x8, the recorded level 8x4 = 32 tokens
        g = auto_graph(tiny_model, k=33, size=128)
        want = ("VideoGrainAutoRegions input 'k'", "only 32 tokens", "Fix: use 1 to 32 clusters")
    else:
        g = auto_graph(tiny_model)
        g["8"] = dict(g["2"], inputs=dict(g["2"]["inputs"], frame_load_cap=1))
        g["5"]["inputs"]["images"] = ["8", 0]
        want = ("VideoGrainAutoRegions input 'images'", "1 frames but the latent has 2", "Fix:")
    message = comfy.run_expect_error(g)
    for part in want:
        assert part in message, message


def test_the_shipped_auto_regions_workflow_edits_the_clip_end_to_end(comfy, tiny_model):
    """workflows/api/videograin_auto_regions.json on the tiny model at 128 px, 3 frames, 3 steps."""
    import json
    from pathlib import Path

    from test_workflows import frames_of, small

    path = Path(__file__).resolve().parents[2] / "workflows" / "api" / "videograin_auto_regions.json"
    prompt = small(json.loads(path.read_text()), tiny_model)
    kinds = {n["class_type"] for n in prompt.values()}
    assert {"VideoGrainAutoRegions", "VideoGrainMaskCheck", "VideoGrainMaskOps", "VideoGrainSampler"} <= kinds
    for node in prompt.values():
        if node["class_type"] == "VideoGrainAutoRegions":
            node["inputs"]["steps"] = 3
    outputs = comfy.run(prompt, timeout=600)
    saves = {k: n["inputs"]["filename_prefix"] for k, n in prompt.items() if n["class_type"] == "VideoGrainSaveVideo"}
    assert len(saves) == 3
    for node, prefix in saves.items():
        [video] = comfy.output_files(outputs[node])
        count, size = frames_of(video)
        assert size == (64, 128), prefix
        assert count == (9 if prefix.endswith("attention") else 3), prefix  # 3 regions' heatmaps per frame
    previews = {n["inputs"]["images"][0]: k for k, n in prompt.items() if n["class_type"] == "PreviewImage"}
    assert set(previews) == {"6", "15"}  # the clusters' colour preview and the coverage plot
    assert all(len(outputs[k]["images"]) >= 1 for k in previews.values())
