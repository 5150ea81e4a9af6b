"""The editing contract through the real server, on the bundled clip with the tiny random model.

- zero effect: strengths 0 and background off equal the sampler on the unpatched model;
- no regions: neither modulation nor blend (docs/design.md quirk 17);
- no leak: a plain KSampler on the original model is unchanged by a patched run;
- localization: modulation pulls each region prompt's cross-attention into its own mask;
- background: outside the union of the masks the edit ends on the source latent.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

FRAMES, STEPS, WIDTH = 4, 4, 256
GLOBAL = "an astronaut and a knight walking under cherry blossoms"
REGIONS = (("left_figure", "astronaut"), ("right_figure", "knight"))


def clip_graph(ckpt: str) -> dict:
    """Checkpoint, the bundled clip at 128×64 (4 frames), its latent, source prompt and inversion."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": FRAMES, "skip_first_frames": 0,
            "select_every_nth": 1, "size_mode": "keep_aspect", "width": WIDTH, "height": WIDTH}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "two people walking", "clip": ["1", 1]}},
        "5": {"class_type": "VideoGrainInvert", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "latent": ["3", 0], "steps": STEPS}},
        "6": {"class_type": "VideoGrainLoadMasks", "inputs": {
            "images": ["2", 0], "masks_path": "videograin_demo/masks", "size_mode": "keep_aspect",
            "frame_load_cap": FRAMES, "skip_first_frames": 0, "select_every_nth": 1, "threshold": 0.5,
            "source_width": ["2", 4], "source_height": ["2", 5]}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
    }


def add_layout(g: dict, regions=REGIONS) -> None:
    previous = None
    for i, (mask, prompt) in enumerate(regions):
        g[f"2{i}"] = {"class_type": "VideoGrainSelectMask", "inputs": {"region_masks": ["6", 0], "name": mask}}
        inputs = {"mask": [f"2{i}", 0], "prompt": prompt, "kind": "instance"}
        if previous:
            inputs["previous"] = [previous, 0]
        g[f"3{i}"] = {"class_type": "VideoGrainRegion", "inputs": inputs}
        previous = f"3{i}"
    layout = {"clip": ["1", 1], "global_prompt": GLOBAL, "latent": ["3", 0]}
    if previous:
        layout["regions"] = [previous, 0]
    g["7"] = {"class_type": "VideoGrainLayout", "inputs": layout}


def apply(g: dict, node: str, cross=1.0, self_=0.3, self_branch="uncond") -> None:
    g[node] = {"class_type": "VideoGrainApplySTLayout", "inputs": {
        "model": ["1", 0], "layout": ["7", 1], "cross_strength": cross, "self_strength": self_,
        "modulated_fraction": 0.5, "levels": "below_highest", "cross_branch": "cond", "self_branch": self_branch}}


def sample(g: dict, node: str, model, background: str, save: str) -> None:
    g[node] = {"class_type": "VideoGrainSampler", "inputs": {
        "model": model, "inversion": ["5", 0], "positive": ["7", 0], "negative": ["9", 0], "cfg": 7.5,
        "steps": STEPS, "seed": 42, "background": background}}
    g[f"{node}s"] = {"class_type": "SaveLatent", "inputs": {"samples": [node, 0], "filename_prefix": save}}


def latent(comfy, outputs: dict, node: str) -> torch.Tensor:
    (path,) = comfy.output_files(outputs[f"{node}s"])
    return load_file(str(path))["latent_tensor"].float()


def test_zero_strengths_without_blend_equal_the_unpatched_sampler(comfy, tiny_model):
    g = clip_graph(tiny_model)
    add_layout(g)
    apply(g, "8", cross=0.0, self_=0.0)
    sample(g, "10", ["8", 0], "off", "vg_edit/zero")
    sample(g, "11", ["1", 0], "off", "vg_edit/plain")
    apply(g, "12")
    sample(g, "13", ["12", 0], "off", "vg_edit/modulated")
    out = comfy.run(g)
    zero, plain, modulated = (latent(comfy, out, n) for n in ("10", "11", "13"))
    assert torch.equal(zero, plain)
    assert (modulated - plain).abs().max() > 1e-3  # the same graph with modulation on does differ


def test_no_regions_means_no_modulation_and_no_blend(comfy, tiny_model):
    g = clip_graph(tiny_model)
    add_layout(g, regions=())
    apply(g, "8")
    sample(g, "10", ["8", 0], "source_noise", "vg_edit/noregions")
    sample(g, "11", ["1", 0], "off", "vg_edit/noregions_plain")
    out = comfy.run(g)
    assert torch.equal(latent(comfy, out, "10"), latent(comfy, out, "11"))


def ksampler_graph(ckpt: str, prefix: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a knight", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": WIDTH, "height": 160, "batch_size": FRAMES}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "seed": 7, "steps": 3, "cfg": 7.5, "sampler_name": "ddim", "scheduler": "ddim_uniform",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "5s": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}},
    }


def test_a_patched_run_leaves_the_original_model_untouched(comfy, tiny_model):
    before = latent(comfy, comfy.run(ksampler_graph(tiny_model, "vg_edit/ks_before")), "5")
    g = clip_graph(tiny_model)
    add_layout(g)
    apply(g, "8")
    sample(g, "10", ["8", 0], "source_noise", "vg_edit/patched")
    comfy.run(g)
    # A different prefix makes ComfyUI run the KSampler again instead of reusing its cached output.
    after = latent(comfy, comfy.run(ksampler_graph(tiny_model, "vg_edit/ks_after")), "5")
    assert torch.equal(before, after)


def inside_shares(comfy, outputs: dict, node: str) -> dict[str, float]:
    text = outputs[node]["text"][0]
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(.*): ([0-9.]+)% inside its mask$", text, re.M)}


def test_modulation_localizes_each_prompt_in_its_region(comfy, peaked_model):
    """The weight-free analogue of the paper's ablation (Table 3): a prompt's attention mass inside
    its own mask rises well above the unmodulated value at the modulated steps."""
    g = clip_graph(peaked_model)
    add_layout(g)
    shares = {}
    for tag, cross in (("off", 0.0), ("on", 1.0)):
        apply(g, f"8{tag}", cross=cross, self_=0.0)
        sample(g, f"10{tag}", [f"8{tag}", 0], "off", f"vg_edit/loc_{tag}")
        g[f"14{tag}"] = {"class_type": "VideoGrainAttentionMaps", "inputs": {
            "attention": [f"10{tag}", 1], "steps": "modulated"}}
        g[f"15{tag}"] = {"class_type": "PreviewAny", "inputs": {"source": [f"14{tag}", 1]}}
    for node in ("5", "10off", "10on"):
        g[node]["inputs"]["steps"] = 10  # the window then starts at t = 901 (τ = 0.59)
    out = comfy.run(g)
    for tag in ("off", "on"):
        shares[tag] = inside_shares(comfy, out, f"15{tag}")
    print("share of each prompt's cross-attention inside its own mask (%):", shares)  # noqa: T201 - the issue asks to print both values
    assert len(shares["on"]) == len(REGIONS) and shares["on"].keys() == shares["off"].keys()
    for name in shares["on"]:
        assert shares["on"][name] > 2 * shares["off"][name], (name, shares)


def test_background_stays_on_the_source_outside_the_masks(comfy, tiny_model):
    g = clip_graph(tiny_model)
    add_layout(g)
    apply(g, "8")
    sample(g, "10", ["8", 0], "source_noise", "vg_edit/bg")
    sample(g, "11", ["8", 0], "inversion_path", "vg_edit/bg_path")
    g["12s"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "vg_edit/source"}}
    g["12m"] = {"class_type": "VideoGrainSelectMask", "inputs": {"region_masks": ["6", 0],
                                                                  "name": "left_figure,right_figure"}}
    g["12i"] = {"class_type": "MaskToImage", "inputs": {"mask": ["12m", 0]}}
    g["12p"] = {"class_type": "SaveImage", "inputs": {"images": ["12i", 0], "filename_prefix": "vg_edit/union"}}
    out = comfy.run(g)
    source = latent(comfy, out, "12")
    files = sorted(comfy.output_files(out["12p"]))
    masks = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("L"))).float() / 255 for f in files])
    union = torch.nn.functional.interpolate(masks[:, None], size=source.shape[-2:], mode="nearest")
    outside = union.expand_as(source) < 0.5
    assert outside.float().mean() > 0.5
    for node in ("10", "11"):
        edit = latent(comfy, out, node)
        torch.testing.assert_close(edit[outside], source[outside], rtol=0, atol=1e-5)
        assert (edit[~outside] - source[~outside]).abs().mean() > 1e-3  # inside the masks it was edited


@pytest.mark.parametrize("bad", ["frames", "prompt"])
def test_layout_errors_name_the_node_and_input(comfy, tiny_model, bad):
    g = clip_graph(tiny_model)
    add_layout(g, regions=(("left_figure", "cowboy"),) if bad == "prompt" else REGIONS)
    if bad == "frames":  # masks of 4 frames against a latent of 2
        g["2"]["inputs"]["frame_load_cap"] = 2
    apply(g, "8")
    sample(g, "10", ["8", 0], "off", "vg_edit/bad")
    message = comfy.run_expect_error(g)
    if bad == "prompt":
        assert "VideoGrainLayout" in message and "cowboy" in message
    else:
        assert "VideoGrainLoadMasks input 'masks_path'" in message and "the images have 2" in message, message
