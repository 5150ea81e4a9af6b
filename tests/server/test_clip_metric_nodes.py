"""VideoGrainCLIPText / VideoGrainCLIPFrames through the real server, on models that core's own loaders load:
a random CLIP ViT-L/14 vision tower (CLIPVisionLoader) and a random CLIP-L text encoder with
text_projection (CLIPLoader, stable_diffusion), both written at test time (tests/server/random_clip.py,
fixed seed, per-process file names, a few MB each) and removed afterwards."""
from __future__ import annotations

import os

import pytest
import random_clip


@pytest.fixture(scope="module")
def clip_files(host_paths):
    """(clip_vision name, text encoder name) in the host's models folders."""
    vision_dir = host_paths.base_dir / "models" / "clip_vision"
    text_dir = host_paths.base_dir / "models" / "text_encoders"
    vision_dir.mkdir(parents=True, exist_ok=True)
    text_dir.mkdir(parents=True, exist_ok=True)
    vision = random_clip.write(random_clip.vision_state_dict(), vision_dir / f"videograin_random_vitl_{os.getpid()}.pt")
    text = random_clip.write(random_clip.text_state_dict(), text_dir / f"videograin_random_clip_l_{os.getpid()}.pt")
    try:
        yield vision.name, text.name
    finally:
        vision.unlink(missing_ok=True)
        text.unlink(missing_ok=True)


def _graph(clip_files) -> dict:
    vision, text = clip_files
    return {
        "1": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": 4, "skip_first_frames": 0,
            "select_every_nth": 3, "size_mode": "keep_aspect", "width": 64, "height": 64}},
        "2": {"class_type": "ImageFromBatch", "inputs": {"image": ["1", 0], "batch_index": 0, "length": 1}},
        "3": {"class_type": "ImageFromBatch", "inputs": {"image": ["1", 0], "batch_index": 3, "length": 1}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}},  # frames A, B
        "5": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 2}},  # A, A
        "6": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": vision}},
        "7": {"class_type": "CLIPLoader", "inputs": {"clip_name": text, "type": "stable_diffusion"}},
    }


def _metric(graph: dict, node: str, kind: str, images: str, text: str | None = None) -> None:
    inputs = {"clip_vision": ["6", 0], "images": [images, 0]}
    if kind == "VideoGrainCLIPText":
        inputs.update(clip=["7", 0], text=text)
    graph[node] = {"class_type": kind, "inputs": inputs}
    graph["p" + node] = {"class_type": "PreviewAny", "inputs": {"source": [node, 0]}}


def _value(out: dict, node: str) -> float:
    return float(out["p" + node]["text"][0])


def test_clip_scores_through_the_server(comfy, clip_files):
    g = _graph(clip_files)
    _metric(g, "10", "VideoGrainCLIPFrames", "5")                        # A, A
    _metric(g, "12", "VideoGrainCLIPText", "4", "a red sports car")      # A, B
    _metric(g, "13", "VideoGrainCLIPText", "2", "a red sports car")      # A
    _metric(g, "15", "VideoGrainCLIPText", "2", "a wooden boat at sea")  # A, another prompt
    out = comfy.run(g, timeout=300)
    assert _value(out, "10") == pytest.approx(100.0, abs=1e-3)
    assert "over 1 frame pairs: 100.0000" in out["10"]["text"][0] and "98.63" in out["10"]["text"][0]
    a, ab, other = (_value(out, n) for n in ("13", "12", "15"))
    assert all(-100.0 <= v <= 100.0 for v in (a, ab, other))
    # A's value does not depend on the batch it is encoded in (A alone, and A next to B: separate encodes),
    # and CLIP-T is the mean of the per-frame values
    report = out["12"]["text"][0]
    assert "CLIP-T (cosine ×100) over 2 frames" in report
    per_frame = [float(v) for v in report.split("per frame: ")[1].splitlines()[0].split(", ")]
    assert per_frame[0] == pytest.approx(a, abs=1e-3)
    assert ab == pytest.approx(sum(per_frame) / 2, abs=1e-3)
    assert abs(per_frame[0] - per_frame[1]) > 1e-2  # the frames matter
    assert abs(a - other) > 1e-3  # the prompt matters


def test_bad_inputs_are_named(comfy, clip_files, tiny_model):
    g = _graph(clip_files)
    _metric(g, "20", "VideoGrainCLIPFrames", "2")  # one frame
    message = comfy.run_expect_error(g)
    assert "VideoGrainCLIPFrames input 'images'" in message and "at least 2" in message and "Fix:" in message

    g = _graph(clip_files)
    _metric(g, "21", "VideoGrainCLIPText", "2", "   ")
    message = comfy.run_expect_error(g)
    assert "VideoGrainCLIPText input 'text'" in message and "Fix:" in message

    g = _graph(clip_files)
    # An SD1.5-layout checkpoint's CLIP (the tiny one, width 64): no text projection in the file, so core's
    # placeholder holds zeros, NaN or leftover memory; refused as never loaded, or else for its size.
    g["8"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_model}}
    _metric(g, "22", "VideoGrainCLIPText", "2", "a red sports car")
    g["22"]["inputs"]["clip"] = ["8", 1]
    message = comfy.run_expect_error(g)
    assert "VideoGrainCLIPText input 'clip'" in message and "clip_l" in message
    assert "never loaded" in message or "embeds images in 768 dimensions but the text encoder's projection gives 64" \
        in message
