"""The CLIP-T / CLIP-F nodes' glue (nodes/metric_nodes.py) on stand-in models: the text side goes through the
CLIP's own text_projection, and every bad input is a VideoGrainInputError naming node and input."""
import pathlib
import sys
import types

import pytest
import torch

if "videograin.nodes" not in sys.modules:  # skip nodes/__init__.py: it registers every node (needs ComfyUI)
    _pkg = types.ModuleType("videograin.nodes")
    _pkg.__path__ = [str(pathlib.Path(__file__).resolve().parents[2] / "nodes")]
    sys.modules["videograin.nodes"] = _pkg

from videograin.nodes import metric_nodes as mn  # noqa: E402
from videograin.nodes.errors import VideoGrainInputError  # noqa: E402


class FakeVision:
    """encode_image -> image_embeds = mean colour of each frame mapped to `dim` values (deterministic)."""

    def __init__(self, dim=3):
        self.model = types.SimpleNamespace(visual_projection=None)
        self.dim, self.calls = dim, []

    def encode_image(self, images):
        self.calls.append(images.shape[0])
        colour = images.float().mean(dim=(1, 2))  # [F, 3]
        return {"image_embeds": colour.repeat(1, self.dim)[:, :self.dim] + 0.1}


class FakeCLIP:
    def __init__(self, weight, projections=1, pooled=None):
        self.cond_stage_model = torch.nn.Module()
        for i in range(projections):
            tower = torch.nn.Module()
            tower.text_projection = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            with torch.no_grad():
                tower.text_projection.weight.copy_(weight)
            self.cond_stage_model.add_module(f"clip_{i}", tower)
        self.pooled = pooled if pooled is not None else torch.ones(1, weight.shape[1])
        self.asked = []

    def tokenize(self, text):
        return {"l": [[(1, 1.0)]], "text": text}

    def encode_from_tokens(self, tokens, return_pooled=False):
        self.asked.append(return_pooled)
        return torch.zeros(1, 77, 4), self.pooled


def frames(*colours):
    return torch.stack([torch.tensor(c, dtype=torch.float32).expand(8, 8, 3) for c in colours])


def test_clip_f_of_repeated_frames_is_100_and_report():
    out = mn.VideoGrainCLIPFrames().measure(FakeVision(), frames([0.2, 0.5, 0.9])[[0, 0, 0]])
    value, report = out["result"]
    assert value == pytest.approx(100.0, abs=1e-9)
    assert out["ui"]["text"] == [report] and "over 2 frame pairs: 100.0000" in report and "98.63" in report


def test_clip_t_applies_the_clips_text_projection():
    weight = torch.tensor([[0.5, 1.0], [1.0, -0.5], [0.25, 0.25]])  # pooled (1, 2) -> text (2.5, 0, 0.75)
    clip = FakeCLIP(weight, pooled=torch.tensor([[1.0, 2.0]]))
    images = frames([0.9, 0.0, 0.0], [0.0, 0.0, 0.0])  # embeds (1.0, 0.1, 0.1) and (0.1, 0.1, 0.1)
    value, report = mn.VideoGrainCLIPText().measure(FakeVision(), clip, images, "a red car")["result"]
    text = torch.tensor([2.5, 0.0, 0.75])
    expect = [torch.nn.functional.cosine_similarity(torch.tensor(e), text, dim=0).item() * 100
              for e in ([1.0, 0.1, 0.1], [0.1, 0.1, 0.1])]
    assert value == pytest.approx(sum(expect) / 2, rel=1e-6)
    assert clip.asked == ["unprojected"]  # core's pooled output, projected by the node itself
    assert "over 2 frames" in report and "36.56" in report


def _error(call) -> VideoGrainInputError:
    with pytest.raises(VideoGrainInputError) as info:
        call()
    return info.value


def test_bad_inputs_name_node_and_input():
    good_clip = FakeCLIP(torch.eye(3) + 0.1)
    vision = FakeVision()
    text_node, frames_node = mn.VideoGrainCLIPText(), mn.VideoGrainCLIPFrames()
    e = _error(lambda: frames_node.measure(vision, frames([0.1, 0.2, 0.3])))
    assert (e.node, e.input_name) == ("VideoGrainCLIPFrames", "images") and "at least 2" in e.problem
    e = _error(lambda: frames_node.measure(object(), frames([0.1, 0.2, 0.3])[[0, 0]]))
    assert e.input_name == "clip_vision" and "not a CLIP vision model" in e.problem
    e = _error(lambda: text_node.measure(vision, good_clip, frames([0.1, 0.2, 0.3]), "  "))
    assert (e.node, e.input_name) == ("VideoGrainCLIPText", "text")
    e = _error(lambda: text_node.measure(vision, FakeCLIP(torch.zeros(3, 3)), frames([0.1, 0.2, 0.3]), "x"))
    assert e.input_name == "clip" and "never loaded" in e.problem and "clip_l" in e.fix
    unloaded = FakeCLIP(torch.eye(3) + 0.1)
    unloaded.cond_stage_model.clip_0.text_projection.weight = torch.nn.Parameter(torch.randn(3, 3))  # never written
    e = _error(lambda: text_node.measure(vision, unloaded, frames([0.1, 0.2, 0.3]), "x"))
    assert e.input_name == "clip" and "never loaded" in e.problem
    for garbage in (torch.eye(3), torch.full((3, 3), float("nan")), torch.full((3, 3), 300.0)):  # leftover memory
        e = _error(lambda: text_node.measure(vision, FakeCLIP(garbage), frames([0.1, 0.2, 0.3]), "x"))
        assert e.input_name == "clip" and "never loaded" in e.problem
    two = FakeCLIP(torch.eye(3) + 0.1, projections=2)
    e = _error(lambda: text_node.measure(vision, two, frames([0.1, 0.2, 0.3]), "x"))
    assert e.input_name == "clip" and "2 text projections" in e.problem
    e = _error(lambda: text_node.measure(FakeVision(dim=5), good_clip, frames([0.1, 0.2, 0.3]), "x"))
    assert e.input_name == "clip" and "5 dimensions" in e.problem and "gives 3" in e.problem
    e = _error(lambda: text_node.measure(vision, "not a clip", frames([0.1, 0.2, 0.3]), "x"))
    assert e.input_name == "clip" and "not a CLIP text encoder" in e.problem
    assert str(e).startswith("VideoGrainCLIPText input 'clip': ") and "Fix: " in str(e)


def test_long_clips_are_encoded_in_chunks():
    vision = FakeVision()
    mn.VideoGrainCLIPFrames().measure(vision, frames([0.1, 0.2, 0.3])[[0] * (mn.CHUNK + 3)])
    assert vision.calls == [mn.CHUNK, 3]
