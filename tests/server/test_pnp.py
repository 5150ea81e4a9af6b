"""PnP feature injection (VideoGrainPnP → VideoGrainInvert → VideoGrainSampler, docs/design.md §10).

The per-step property (exactly the first k editing steps change) is checked by `pnp_probe.py` on
ComfyUI's real model code in a subprocess; the node contract (edit, cache, sizes, errors) through the
real server with the tiny model on a 3-frame clip written here.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from videograin.masks.layout import attention_sizes
from videograin.sampling.pnp_features import expected_bytes

FRAMES, W, H, STEPS = 3, 128, 64, 4
TINY_CHANNELS = 32  # model_channels of the tiny SD1.5-layout checkpoint
PROBE = Path(__file__).resolve().parent / "pnp_probe.py"


def test_exactly_the_first_k_steps_change_and_features_match_the_formula(host_paths):
    run = subprocess.run([str(host_paths.python), str(PROBE), str(host_paths.comfy_dir), "2", "5"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    probe = json.loads(run.stdout.strip().splitlines()[-1])
    # Same latent, same σ: the prediction differs in steps 0 and 1 only, bit-identical after.
    assert probe["equal_per_step"] == [False, False, True, True, True]
    assert min(probe["max_diff_per_step"][:2]) > 1e-3
    assert probe["feature_bytes"] == probe["formula_bytes"] > 0
    assert probe["feature_count"] == 2 * 2 * 15  # steps × CFG halves × (3 residuals + 6 q + 6 k)
    assert probe["inversion_unchanged"]  # recording (with its extra uncond pass) leaves z_T bit-identical
    assert probe["plain_has_no_features"]


@pytest.fixture(scope="module")
def clip(comfy_server):
    root = Path(comfy_server.input_dir) / f"vg-pnp-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    for i in range(FRAMES):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 1] = np.linspace(40, 200, W, dtype=np.uint8)[None, :]
        img[16:48, 8 + 8 * i:40 + 8 * i] = (255, 0, 0)
        Image.fromarray(img).save(root / f"{i:03d}.png")
    try:
        yield root.name
    finally:
        shutil.rmtree(root, ignore_errors=True)


def graph(ckpt: str, clip: str, prefix: str, invert_k: int | None, edit_k: int | None = "same",
          cache: str = "off") -> dict:
    """The instance edit; `invert_k` / `edit_k`: VideoGrainPnP's inject_step on the model of the inversion /
    of the edit (None: no PnP node; edit_k "same": the inversion's model)."""
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

    def pnp(node: str, k):
        if k is None:
            return ["1", 0]
        g[node] = {"class_type": "VideoGrainPnP", "inputs": {"model": ["1", 0], "inject_step": k,
                                                             "negative": ["9", 0]}}
        return [node, 0]

    invert_model = pnp("30", invert_k)
    edit_model = invert_model if edit_k == "same" else pnp("31", edit_k)
    g["5"] = {"class_type": "VideoGrainInvert", "inputs": {"model": invert_model, "positive": ["4", 0],
                                                           "latent": ["3", 0], "steps": STEPS, "cache": cache}}
    g["8"] = {"class_type": "VideoGrainApplySTLayout", "inputs": {
        "model": edit_model, "layout": ["7", 1], "cross_strength": 1.0, "self_strength": 0.3,
        "modulated_fraction": 0.5, "levels": "below_highest", "cross_branch": "cond", "self_branch": "both"}}
    g["10"] = {"class_type": "VideoGrainSampler", "inputs": {
        "model": ["8", 0], "inversion": ["5", 0], "positive": ["7", 0], "negative": ["9", 0], "cfg": 7.5,
        "steps": STEPS, "seed": 42, "background": "source_noise"}}
    g["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": prefix}}
    return g


def edited(comfy, outputs) -> torch.Tensor:
    (path,) = comfy.output_files(outputs["11"])
    return load_file(str(path))["latent_tensor"].float()


def test_pnp_changes_the_edit_and_inject_step_0_is_no_pnp(comfy, tiny_model, clip):
    plain = edited(comfy, comfy.run(graph(tiny_model, clip, "vg_pnp/plain", None)))
    off = edited(comfy, comfy.run(graph(tiny_model, clip, "vg_pnp/off", 0)))
    out = comfy.run(graph(tiny_model, clip, "vg_pnp/k2", 2))
    injected = edited(comfy, out)
    assert torch.equal(off, plain)  # inject_step 0 is exactly the pipeline without the node
    assert torch.isfinite(injected).all() and (injected - plain).abs().max() > 1e-4
    # The Invert node reports the recorded features' size, which is the formula's for this clip.
    (report,) = out["5"]["text"]
    itemsize = 4  # the tiny model runs in fp32 on the CPU
    want = expected_bytes(FRAMES, attention_sizes((H // 8, W // 8)), TINY_CHANNELS, 2, itemsize)
    assert f"({want:,} bytes)" in report and "2 editing step(s)" in report


def test_pnp_inversion_is_cached_with_its_features(comfy, comfy_server, tiny_model, clip):
    g = graph(tiny_model, clip, "vg_pnp/cache", 1, cache="on")
    g["4"]["inputs"]["text"] = "a red square, cached"  # a source prompt no other test inverts
    first = edited(comfy, comfy.run(g))
    # The cache file holds the features: 1 step × 2 CFG halves × 15 tensors, the formula's bytes.
    files = sorted(Path(comfy_server.cache_dir).rglob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    stored = load_file(str(files[-1]))
    pnp = {k: t for k, t in stored.items() if k.startswith("extra/pnp/")}
    assert len(pnp) == 30
    assert sum(t.numel() * t.element_size() for t in pnp.values()) == \
        expected_bytes(FRAMES, attention_sizes((H // 8, W // 8)), TINY_CHANNELS, 1, 4)
    # Drop ComfyUI's in-memory outputs so that VideoGrainInvert runs again: it loads from the disk cache.
    hits = comfy_server.log_text().count("inversion cache hit")
    comfy._request("/free", {"free_memory": True})
    time.sleep(1.5)
    second = edited(comfy, comfy.run(g))
    assert comfy_server.log_text().count("inversion cache hit") == hits + 1
    assert torch.equal(first, second)  # the edit from the cached features equals the computed one


@pytest.mark.parametrize("invert_k,edit_k,needle", [
    (5, "same", "VideoGrainPnP input 'inject_step'"),        # more than steps - 1 = 3 injectable steps
    (None, 2, "VideoGrainSampler input 'inversion'"),        # the inversion recorded no features
    (1, 2, "VideoGrainSampler input 'inversion'"),           # it recorded 1 step, the edit injects 2
])
def test_bad_pnp_inputs_are_named_errors(comfy, tiny_model, clip, invert_k, edit_k, needle):
    message = comfy.run_expect_error(graph(tiny_model, clip, "vg_pnp/bad", invert_k, edit_k))
    assert needle in message and "Fix:" in message
