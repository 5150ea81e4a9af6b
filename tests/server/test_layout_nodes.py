"""VideoGrainRegion / VideoGrainLayout through the real server with the tiny SD1.5-layout model.

The splice is made observable through a core KSampler at cfg 1 (only the positive is evaluated),
sampled once with the layout's positive and once with CLIPTextEncode of the same global prompt:
- a local prompt that is not a prefix of the global prompt is encoded without the global prompt's
  leading words (CLIP text attention is causal), so splicing it changes the result;
- a local prompt that *is* the global prompt's prefix has, under causal attention, exactly the
  global rows 1…n as its own rows 1…n: a correct splice leaves the result bit-identical, while a
  splice that took the wrong rows or landed on the wrong positions would change it.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

SIZE, FRAMES = 64, 2


class Graph:
    """Tiny API-format prompt builder: `add` returns the node id; `out(id, slot)` is a link."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.nodes) + 1)
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    @staticmethod
    def out(node_id: str, slot: int = 0) -> list:
        return [node_id, slot]


def base_graph(model: str, frames: int = FRAMES, width: int = SIZE, height: int = SIZE):
    g = Graph()
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=model)
    latent = g.add("EmptyLatentImage", width=width, height=height, batch_size=frames)
    empty = g.add("CLIPTextEncode", clip=g.out(ckpt, 1), text="")
    return g, ckpt, latent, empty


def half_mask(g: Graph, side: str, size: int = SIZE) -> list:
    """Left or right half of a size×size frame, from core mask nodes."""
    zero = g.add("SolidMask", value=0.0, width=size, height=size)
    half = g.add("SolidMask", value=1.0, width=size // 2, height=size)
    return g.out(g.add("MaskComposite", destination=g.out(zero), source=g.out(half),
                       x=0 if side == "left" else size // 2, y=0, operation="add"))


def region(g: Graph, mask: list, prompt: str, previous: str | None = None, kind: str = "instance") -> str:
    inputs = {"mask": mask, "prompt": prompt, "kind": kind}
    if previous is not None:
        inputs["previous"] = g.out(previous)
    return g.add("VideoGrainRegion", **inputs)


def layout(g: Graph, ckpt: str, latent: str, global_prompt: str, regions: str | None) -> str:
    inputs = {"clip": g.out(ckpt, 1), "global_prompt": global_prompt, "latent": g.out(latent)}
    if regions is not None:
        inputs["regions"] = g.out(regions)
    return g.add("VideoGrainLayout", **inputs)


def sample_and_save(g: Graph, ckpt: str, latent: str, positive: list, negative: str, prefix: str) -> str:
    k = g.add("KSampler", model=g.out(ckpt), seed=7, steps=1, cfg=1.0, sampler_name="euler", scheduler="normal",
              positive=positive, negative=g.out(negative), latent_image=g.out(latent), denoise=1.0)
    return g.add("SaveLatent", samples=g.out(k), filename_prefix=f"videograin_layout_test/{prefix}")


def saved_latent(comfy, outputs: dict, node_id: str) -> torch.Tensor:
    (path,) = comfy.output_files({node_id: outputs[node_id]})
    return load_file(str(path))["latent_tensor"]


def test_nodes_registered_with_contract(comfy):
    region_info = comfy.object_info("VideoGrainRegion")
    layout_info = comfy.object_info("VideoGrainLayout")
    assert region_info["category"] == layout_info["category"] == "VideoGrain/edit"
    assert list(region_info["input"]["required"]) == ["mask", "prompt", "kind"]
    assert list(region_info["input"]["optional"]) == ["previous"]
    assert region_info["input"]["required"]["kind"][0] == ["class", "instance", "part", "background"]
    assert region_info["output"] == ["VIDEOGRAIN_REGION"] and region_info["output_name"] == ["regions"]
    assert list(layout_info["input"]["required"]) == ["clip", "global_prompt", "latent"]
    assert list(layout_info["input"]["optional"]) == ["regions", "threshold", "downsample", "binding"]
    assert layout_info["input"]["optional"]["downsample"][0] == ["nearest_rescue", "nearest", "area"]
    assert layout_info["input"]["optional"]["binding"][0] == ["next_free", "first"]
    assert layout_info["output"] == ["CONDITIONING", "VIDEOGRAIN_LAYOUT"]
    assert layout_info["output_name"] == ["positive", "layout"]
    for info in (region_info, layout_info):
        assert info["description"]
        for section in ("required", "optional"):
            for name, spec in info["input"][section].items():
                assert spec[1].get("tooltip"), f"{info['name']}.{name} has no tooltip"


def test_spliced_positive_samples_and_matches_plain_encode_where_it_must(comfy, tiny_model):
    g, ckpt, latent, empty = base_graph(tiny_model)
    left, right = half_mask(g, "left"), half_mask(g, "right")
    car = region(g, left, "red car")
    house = region(g, right, "blue house", previous=car)
    tree = region(g, right, "green tree", previous=car, kind="background")  # branches from the same chain
    prefix = region(g, left, "Red car", kind="class")
    keep = region(g, right, "", previous=prefix, kind="background")          # empty prompt: separated, no text

    spliced = layout(g, ckpt, latent, "a red car next to a blue house", house)
    branch = layout(g, ckpt, latent, "a red car under a green tree", tree)   # would fail if house leaked in
    prefixed = layout(g, ckpt, latent, "red car next to a blue house", keep)
    plain = g.add("CLIPTextEncode", clip=g.out(ckpt, 1), text="a red car next to a blue house")
    plain_prefixed = g.add("CLIPTextEncode", clip=g.out(ckpt, 1), text="red car next to a blue house")

    saves = {
        "spliced": sample_and_save(g, ckpt, latent, g.out(spliced), empty, "spliced"),
        "plain": sample_and_save(g, ckpt, latent, g.out(plain), empty, "plain"),
        "branch": sample_and_save(g, ckpt, latent, g.out(branch), empty, "branch"),
        "prefixed": sample_and_save(g, ckpt, latent, g.out(prefixed), empty, "prefixed"),
        "plain_prefixed": sample_and_save(g, ckpt, latent, g.out(plain_prefixed), empty, "plain_prefixed"),
    }
    outputs = comfy.run(g.nodes)
    got = {name: saved_latent(comfy, outputs, node) for name, node in saves.items()}
    for name, x in got.items():
        assert x.shape == (FRAMES, 4, SIZE // 8, SIZE // 8), name
        assert torch.isfinite(x).all(), name
    diff = (got["spliced"] - got["plain"]).abs().max().item()
    assert diff > 1e-4, f"max |spliced - plain| = {diff:.3e}"
    assert torch.equal(got["prefixed"], got["plain_prefixed"])
    assert not torch.equal(got["branch"], got["spliced"])


def run_layout_error(comfy, model: str, global_prompt: str, prompts: list[str], mask_frames: int = 1,
                     latent_frames: int = FRAMES, latent_width: int = SIZE) -> str:
    g, ckpt, latent, empty = base_graph(model, frames=latent_frames, width=latent_width)
    mask = half_mask(g, "left")
    if mask_frames > 1:
        image = g.add("RepeatImageBatch", image=g.out(g.add("MaskToImage", mask=mask)), amount=mask_frames)
        mask = g.out(g.add("ImageToMask", image=g.out(image), channel="red"))
    previous = None
    for p in prompts:
        previous = region(g, mask, p, previous=previous)
    lay = layout(g, ckpt, latent, global_prompt, previous)
    sample_and_save(g, ckpt, latent, g.out(lay), empty, "error")
    return comfy.run_expect_error(g.nodes)


@pytest.mark.parametrize("case", [
    dict(global_prompt="Iron Man and Spiderman", prompts=["Iron Man", "Batman"],
         expect=["VideoGrainLayout input 'regions'", "region 2", "'Batman'", "'Iron Man and Spiderman'", "Fix:"]),
    dict(global_prompt="Iron Man and Spiderman", prompts=["Iron Man", "Man"],
         expect=["VideoGrainLayout input 'regions'", "'Iron Man'", "'Man'", "same words"]),
    dict(global_prompt=" ".join(["cat"] * 80), prompts=["cat"],
         expect=["VideoGrainLayout input 'global_prompt'", "82 tokens", "77"]),
    dict(global_prompt="Iron Man and Spiderman", prompts=["Iron Man"], mask_frames=3,
         expect=["VideoGrainLayout input 'regions'", "3 frames", "latent has 2"]),
    dict(global_prompt="Iron Man and Spiderman", prompts=["Iron Man"], latent_width=2 * SIZE,
         expect=["VideoGrainLayout input 'regions'", "64x64 pixels", "latent is 16x8"]),
    dict(global_prompt="(Iron Man:1.2) and Spiderman", prompts=["(Iron Man:1.2)"],
         expect=["VideoGrainRegion input 'prompt'", "weight syntax"]),
], ids=["not_found", "overlap", "too_long", "frames", "size", "weights"])
def test_errors_name_node_input_and_fix(comfy, tiny_model, case):
    expect = case.pop("expect")
    message = run_layout_error(comfy, tiny_model, **case)
    for part in expect:
        assert part in message, f"{part!r} not in {message!r}"


def test_empty_mask_is_refused_by_region_node(comfy, tiny_model):
    g, ckpt, latent, empty = base_graph(tiny_model)
    blank = g.out(g.add("SolidMask", value=0.0, width=SIZE, height=SIZE))
    lay = layout(g, ckpt, latent, "Iron Man", region(g, blank, "Iron Man"))
    sample_and_save(g, ckpt, latent, g.out(lay), empty, "error")
    message = comfy.run_expect_error(g.nodes)
    assert "VideoGrainRegion input 'mask'" in message and "empty" in message


def test_no_regions_is_the_plain_global_prompt(comfy, tiny_model):
    g, ckpt, latent, empty = base_graph(tiny_model)
    lay = layout(g, ckpt, latent, "a red car next to a blue house", None)
    plain = g.add("CLIPTextEncode", clip=g.out(ckpt, 1), text="a red car next to a blue house")
    a = sample_and_save(g, ckpt, latent, g.out(lay), empty, "global")
    b = sample_and_save(g, ckpt, latent, g.out(plain), empty, "global_plain")
    outputs = comfy.run(g.nodes)
    assert torch.equal(saved_latent(comfy, outputs, a), saved_latent(comfy, outputs, b))
