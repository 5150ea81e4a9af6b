"""PnP feature injection (VideoGrainPnP → VideoGrainInvert → VideoGrainSampler, docs/design.md §10).

The per-step property (exactly the first k editing steps change) is checked by `pnp_probe.py` on
ComfyUI's real model code in a subprocess; the node contract (edit, cache, sizes, errors) through the
real server with the tiny model on a 3-frame clip written here.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import torch
from red_square import edit_graph, red_square_clip
from red_square import edited_latent as edited
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
    with red_square_clip(comfy_server.input_dir, FRAMES, W, H, step=8, tag="pnp") as name:
        yield name


def graph(ckpt: str, clip: str, prefix: str, invert_k: int | None, edit_k: int | None = "same",
          cache: str = "off") -> dict:
    """The instance edit; `invert_k` / `edit_k`: VideoGrainPnP's inject_step on the model of the inversion /
    of the edit (None: no PnP node; edit_k "same": the inversion's model)."""
    nodes = {}

    def pnp(node: str, k):
        if k is None:
            return ("1", 0)
        nodes[node] = {"class_type": "VideoGrainPnP", "inputs": {"model": ["1", 0], "inject_step": k,
                                                                 "negative": ["9", 0]}}
        return (node, 0)

    invert_model = pnp("30", invert_k)
    edit_model = invert_model if edit_k == "same" else pnp("31", edit_k)
    return {**edit_graph(ckpt, clip, STEPS, prefix, invert_model, edit_model, cache=cache), **nodes}


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
