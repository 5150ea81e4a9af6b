"""Core FreeU / FreeU_V2 (comfy_extras nodes_freelunch) applied to the model before the pack's nodes is
active in VideoGrainInvert and in VideoGrainSampler: it patches output_block_patch, which the pack's
clones keep, so the inverted latent and the edit both differ from the same graph without FreeU."""
from __future__ import annotations

import pytest

from test_inversion_sampler import SIZE, _base, _invert, _latent, _layout_nodes, _rel, _sample, _save_latent, clip_name  # noqa: F401

STEPS = 4


@pytest.mark.parametrize("freeu", ["FreeU", "FreeU_V2"])
def test_freeu_reaches_inversion_and_edit(comfy, tiny_model, clip_name, freeu):  # noqa: F811 (the imported fixture)
    g = _base(tiny_model, clip_name)
    # 128 px: FreeU_V2 normalises by the spread of the deepest 4×-channel level, which is one cell (zero
    # spread, NaN) for a 64 px clip's 8×8 latent; at 128 px it is 2×2 (at 512 px, 8×8).
    g["20"] = {"class_type": "ImageScale", "inputs": {"image": ["2", 0], "upscale_method": "bilinear",
                                                      "width": 2 * SIZE, "height": 2 * SIZE, "crop": "disabled"}}
    g["3"]["inputs"]["pixels"] = ["20", 0]
    g.update(_layout_nodes())  # "45": ST-Layout on the plain model "1"
    g["40"]["inputs"].update(width=2 * SIZE, height=2 * SIZE)
    g["41"]["inputs"].update(width=SIZE, height=2 * SIZE)
    g["50"] = {"class_type": freeu, "inputs": {"model": ["1", 0], "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}}
    g["51"] = dict(g["45"], inputs={**g["45"]["inputs"], "model": ["50", 0]})  # ST-Layout on the FreeU model
    g["52"] = _invert(("50", 0), ("3", 0), STEPS)
    g["53"] = _invert(("1", 0), ("3", 0), STEPS)
    g["54"] = _sample(("51", 0), ("53", 0), 7.5, STEPS, "source_noise", positive=("44", 0))
    g["55"] = _sample(("45", 0), ("53", 0), 7.5, STEPS, "source_noise", positive=("44", 0))
    for node, name in (("52", "inv"), ("53", "inv_plain")):
        g[f"6{node[1]}"] = _save_latent((node, 1), f"vg_freeu_{freeu}_{name}")
    for node, name in (("54", "edit"), ("55", "edit_plain")):
        g[f"6{node[1]}"] = _save_latent((node, 0), f"vg_freeu_{freeu}_{name}")
    out = comfy.run(g, timeout=300)
    inv, inv_plain, edit, edit_plain = (_latent(comfy, out, n) for n in ("62", "63", "64", "65"))
    print(f"{freeu}: inversion changed by {_rel(inv, inv_plain):.3e}, edit by {_rel(edit, edit_plain):.3e}")  # noqa: T201
    assert _rel(inv, inv_plain) > 1e-3, "FreeU did not reach the inversion"
    assert _rel(edit, edit_plain) > 1e-3, "FreeU did not reach the edit"
