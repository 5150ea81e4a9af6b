"""Every shipped workflow: its UI file agrees with its API twin, and it runs in the real server.

The edit workflows run on the tiny random model at a small size and few steps (random weights give
noise; what is checked is that the whole graph runs and writes the videos it promises).
"""
from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

PACK_DIR = Path(__file__).resolve().parents[2]
API_DIR = PACK_DIR / "workflows" / "api"
NAMES = sorted(p.stem for p in API_DIR.glob("*.json"))
EDITS = [n for n in NAMES if n.endswith("_edit")]


def test_the_three_edit_levels_are_shipped():
    assert EDITS == ["videograin_class_edit", "videograin_instance_edit", "videograin_part_edit"]
    assert all((PACK_DIR / "workflows" / f"{n}.json").is_file() for n in NAMES)


def widget_names(info: dict) -> list[str]:
    """Inputs that the frontend shows as widgets, in its order (an extra slot for seed controls)."""
    spec = {**info["input"]["required"], **info["input"].get("optional", {})}
    order = info["input_order"]["required"] + info["input_order"].get("optional", [])
    names = []
    for name in order:
        kind, options = spec[name][0], (spec[name][1] if len(spec[name]) > 1 else {})
        if (isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")) \
                and not options.get("forceInput"):
            names.append(name)
            if options.get("control_after_generate"):
                names.append(None)
    return names


@pytest.mark.parametrize("name", NAMES)
def test_ui_workflow_matches_its_api_twin(comfy, name):
    """Same nodes, same widget values (by input order from /object_info) and same links."""
    ui = json.loads((PACK_DIR / "workflows" / f"{name}.json").read_text())
    api = json.loads((API_DIR / f"{name}.json").read_text())
    assert ui["version"] == 0.4
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert {k: n["type"] for k, n in nodes.items()} == {k: v["class_type"] for k, v in api.items()}
    links = {link[0]: link for link in ui["links"]}
    for node_id, node in nodes.items():
        widgets = widget_names(comfy.object_info(node["type"]))
        assert len(node["widgets_values"]) == len(widgets), node["type"]
        api_inputs = api[node_id]["inputs"]
        linked = {}
        for slot, inp in enumerate(node["inputs"]):
            if inp.get("link") is not None:
                link = links[inp["link"]]
                assert (link[3], link[4]) == (node["id"], slot)
                linked[inp["name"]] = [str(link[1]), link[2]]
        for widget, value in zip(widgets, node["widgets_values"]):
            if widget is not None and widget not in linked:
                assert api_inputs[widget] == value, (node["type"], widget)
        assert {k: v for k, v in api_inputs.items() if isinstance(v, list)} == linked, node["type"]
        for out in node["outputs"]:
            for link_id in out["links"] or []:
                assert links[link_id][1] == node["id"]


def small(prompt: dict, ckpt: str, frames: int = 3, steps: int = 3) -> dict:
    """The same graph at 128 px wide, a few frames and steps, on the given checkpoint."""
    for node in prompt.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = ckpt
        if kind == "VideoGrainLoadVideo":
            inputs.update(width=128, height=128, frame_load_cap=frames)
        if kind == "VideoGrainLoadMasks":
            inputs["frame_load_cap"] = frames
        if kind in ("VideoGrainInvert", "VideoGrainSampler"):
            inputs["steps"] = steps
        if kind == "VideoGrainSaveVideo":
            inputs["filename_prefix"] = "vg_workflows/" + inputs["filename_prefix"].split("/")[-1]
    return prompt


def frames_of(path: Path) -> tuple[int, tuple[int, int]]:
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return len(decoded), decoded[0].shape[:2]


@pytest.mark.parametrize("name", EDITS)
def test_edit_workflow_runs_and_writes_its_videos(comfy, tiny_model, name):
    prompt = small(json.loads((API_DIR / f"{name}.json").read_text()), tiny_model)
    regions = sum(1 for n in prompt.values() if n["class_type"] == "VideoGrainRegion")
    outputs = comfy.run(prompt, timeout=600)
    saves = [k for k, n in prompt.items() if n["class_type"] == "VideoGrainSaveVideo"]
    edit, maps = sorted(saves, key=lambda k: "attention" in prompt[k]["inputs"]["filename_prefix"])
    [edit_file] = comfy.output_files(outputs[edit])
    [maps_file] = comfy.output_files(outputs[maps])
    assert edit_file.suffix == ".mp4" and maps_file.suffix == ".mp4"
    assert frames_of(edit_file) == (3, (64, 128))           # 512×320 fitted into 128×128, snapped to 64
    assert frames_of(maps_file) == (3 * regions, (64, 128))  # one heatmap per region and frame


def test_many_prompts_workflow_inverts_once_and_writes_one_video_per_prompt_set(comfy, tiny_model):
    prompt = small(json.loads((API_DIR / "videograin_many_prompts.json").read_text()), tiny_model)
    [invert] = [k for k, n in prompt.items() if n["class_type"] == "VideoGrainInvert"]
    samplers = [n for n in prompt.values() if n["class_type"] == "VideoGrainSampler"]
    assert len(samplers) == 3 and all(n["inputs"]["inversion"] == [invert, 0] for n in samplers)
    outputs = comfy.run(prompt, timeout=600)
    saves = sorted(k for k, n in prompt.items() if n["class_type"] == "VideoGrainSaveVideo")
    files = [comfy.output_files(outputs[k]) for k in saves]
    assert all(len(f) == 1 and f[0].suffix == ".mp4" and frames_of(f[0]) == (3, (64, 128)) for f in files)
    assert len({f[0].name for f in files}) == 3
