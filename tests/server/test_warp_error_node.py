"""VideoGrainWarpError through the real server: a static clip measures 0, a moving edit does not, and
the node runs on the shipped class-edit workflow's output (all pixels and inside the region mask)."""
from __future__ import annotations

import json
import math

from test_workflows import API_DIR, small


def _warp(images, source, region="all", mask=None) -> dict:
    inputs = {"images": list(images), "source": list(source), "region": region, "method": "dis",
              "error": "squared", "scale": 1000.0}
    if mask is not None:
        inputs["mask"] = list(mask)
    return {"class_type": "VideoGrainWarpError", "inputs": inputs}


def _value(out: dict, node: str) -> float:
    return float(out[node]["text"][0])


def test_static_clip_is_zero_and_flicker_is_not(comfy):
    g = {
        "1": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": 1, "skip_first_frames": 0,
            "select_every_nth": 1, "size_mode": "keep_aspect", "width": 128, "height": 128}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}},
        "3": _warp(("2", 0), ("2", 0)),
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
        # the same frames, every other one inverted in colour: maximal flicker on a static source
        "6": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "7": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["6", 0]}},
        "8": {"class_type": "ImageBatch", "inputs": {"image1": ["7", 0], "image2": ["1", 0]}},
        "9": _warp(("8", 0), ("2", 0)),
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}},
    }
    out = comfy.run(g, timeout=120)
    assert _value(out, "4") == 0.0
    summary = out["5"]["text"][0]
    assert "Warp-Err (squared" in summary and "per frame pair: 0.000, 0.000" in summary
    assert _value(out, "10") > 10.0


def test_runs_on_the_shipped_workflow_output(comfy, tiny_model):
    prompt = small(json.loads((API_DIR / "videograin_class_edit.json").read_text()), tiny_model)
    prompt["90"] = _warp(("11", 0), ("2", 0))
    prompt["91"] = _warp(("11", 0), ("2", 0), "inside", ("20", 0))
    prompt["92"] = {"class_type": "PreviewAny", "inputs": {"source": ["90", 0]}}
    prompt["93"] = {"class_type": "PreviewAny", "inputs": {"source": ["91", 1]}}
    out = comfy.run(dict(prompt), timeout=600)
    value = _value(out, "92")
    assert math.isfinite(value) and value > 0.0
    assert "region inside" in out["93"]["text"][0]
    prompt["94"] = _warp(("11", 0), ("2", 0), "inside")  # no mask: a named error
    prompt["95"] = {"class_type": "PreviewAny", "inputs": {"source": ["94", 0]}}
    message = comfy.run_expect_error(prompt)
    assert "VideoGrainWarpError input 'mask'" in message and "Fix:" in message
