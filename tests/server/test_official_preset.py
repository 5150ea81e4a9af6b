"""The official-preset workflow (workflows/api/videograin_official_preset.json) runs end to end in the real
server on the tiny model, with a random tiny ControlNet in place of the file the user supplies, and every
official component is in the graph (ControlNet on both passes, trajectory attention at the highest level,
FreeU, the official λ, window and CFG)."""
from __future__ import annotations

import json

from test_inversion_sampler import controlnet_name  # noqa: F401
from test_workflows import API_DIR, PACK_DIR, frames_of, small

NAME = "videograin_official_preset"


def _preset() -> dict:
    return json.loads((API_DIR / f"{NAME}.json").read_text())


def test_the_preset_holds_every_official_component():
    prompt = _preset()
    by_type = {}
    for node_id, node in prompt.items():
        by_type.setdefault(node["class_type"], []).append((node_id, node["inputs"]))
    [(traj_id, traj)] = by_type["VideoGrainTrajectoryAttention"]
    assert traj["resolutions"] == "64"
    [(freeu_id, freeu)] = by_type["FreeU_V2"]
    assert (freeu["b1"], freeu["b2"], freeu["s1"], freeu["s2"]) == (1.2, 1.5, 1.0, 1.0)
    assert traj["model"] == [freeu_id, 0]
    [(pnp_id, pnp)] = by_type["VideoGrainPnP"]
    assert pnp["model"] == [traj_id, 0] and pnp["inject_step"] == 0  # present, off as in the mirrored config
    [(_, st)] = by_type["VideoGrainApplySTLayout"]
    assert (st["cross_strength"], st["self_strength"], st["modulated_fraction"]) == (1.0, 0.3, 0.3)
    assert st["model"] == [pnp_id, 0]
    [(_, invert)] = by_type["VideoGrainInvert"]
    [(_, sampler)] = by_type["VideoGrainSampler"]
    assert invert["model"] == [pnp_id, 0] and sampler["cfg"] == 7.5 and invert["steps"] == sampler["steps"] == 50
    assert pnp["negative"] == sampler["negative"]  # the uncond features are recorded with the edit's negative
    controls = {node_id for node_id, _ in by_type["ControlNetApplyAdvanced"]}
    assert invert["positive"][0] in controls and sampler["positive"][0] in controls
    assert "VideoGrainTemporalWindows" not in by_type  # the official edits attend over all frames
    ui = json.loads((PACK_DIR / "workflows" / f"{NAME}.json").read_text())
    assert "instance-level" in ui["extra"]["notes"]["1"]


def test_the_preset_runs_end_to_end(comfy, tiny_model, controlnet_name):  # noqa: F811
    prompt = small(_preset(), tiny_model)
    for node in prompt.values():
        if node["class_type"] == "ControlNetLoader":
            node["inputs"]["control_net_name"] = controlnet_name
        if node["class_type"] == "VideoGrainPnP":
            node["inputs"]["inject_step"] = 1  # switched on: PnP with ControlNet, FreeU and trajectories
    outputs = comfy.run(prompt, timeout=600)
    [invert_id] = [k for k, n in prompt.items() if n["class_type"] == "VideoGrainInvert"]
    assert "PnP features of 1 editing step(s)" in outputs[invert_id]["text"][0]
    saves = sorted((k for k, n in prompt.items() if n["class_type"] == "VideoGrainSaveVideo"),
                   key=lambda k: "attention" in prompt[k]["inputs"]["filename_prefix"])
    [edit_file] = comfy.output_files(outputs[saves[0]])
    assert frames_of(edit_file) == (3, (64, 128))
