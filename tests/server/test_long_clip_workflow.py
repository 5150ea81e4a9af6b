"""The shipped long-clip workflow (workflows/api/videograin_long_clip.json) and the chunked VAE on every shipped
edit workflow.

End to end: a 24-frame synthetic clip (the demo's figures walking to and fro, with its masks; written by
bench/run_workflow.py's clip writer) through the real server on the tiny model at 128 px, windows of 8
frames with overlap 2 and 1 anchor (four windows: 0-8, 6-14, 12-20, 16-24), 3 steps.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import uuid
from pathlib import Path

import pytest
from test_workflows import API_DIR, PACK_DIR, frames_of, small

NAME = "videograin_long_clip"
FRAMES = 24


def _prompt() -> dict:
    return json.loads((API_DIR / f"{NAME}.json").read_text())


def _by_type(prompt: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for node_id, node in prompt.items():
        out.setdefault(node["class_type"], []).append(node_id)
    return out


def test_every_shipped_workflow_runs_its_vae_in_chunks():
    for path in sorted(API_DIR.glob("*.json")):
        prompt = json.loads(path.read_text())
        kinds = {n["class_type"] for n in prompt.values()}
        assert not kinds & {"VAEEncode", "VAEDecode"}, path.name
        for node in prompt.values():
            if node["class_type"] in ("VideoGrainVAEEncode", "VideoGrainVAEDecode"):
                assert node["inputs"]["frames_per_chunk"] == 4, path.name


def test_the_long_clip_workflow_windows_both_passes_and_follows_one_frame_cap():
    prompt = _prompt()
    kinds = _by_type(prompt)
    [windows] = kinds["VideoGrainTemporalWindows"]
    w = prompt[windows]["inputs"]
    assert (w["window"], w["overlap"], w["anchors"]) == (16, 4, 2) and w["model"] == [kinds["CheckpointLoaderSimple"][0], 0]
    [invert], [st] = kinds["VideoGrainInvert"], kinds["VideoGrainApplySTLayout"]
    assert prompt[invert]["inputs"]["model"] == prompt[st]["inputs"]["model"] == [windows, 0]  # same windows
    [video], [masks] = kinds["VideoGrainLoadVideo"], kinds["VideoGrainLoadMasks"]
    assert prompt[masks]["inputs"]["frame_load_cap"] == [video, 1]  # frame_count: one cap for the user to set
    [encode], [decode], [save] = kinds["VideoGrainVAEEncode"], kinds["VideoGrainVAEDecode"], kinds["VideoGrainSaveVideo"]
    assert prompt[encode]["inputs"]["pixels"] == [video, 0] and prompt[save]["inputs"]["images"] == [decode, 0]
    assert len(kinds["VideoGrainRegion"]) == 3  # two instances and the background, as the frames-per-card table
    ui = json.loads((PACK_DIR / "workflows" / f"{NAME}.json").read_text())
    assert "frame_load_cap" in ui["extra"]["notes"]["1"]


@pytest.fixture(scope="module")
def long_clip_folder(comfy_server):
    spec = importlib.util.spec_from_file_location("bench_run_workflow_clip", PACK_DIR / "bench" / "run_workflow.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = Path(comfy_server.input_dir) / f"vg-long-{uuid.uuid4().hex[:8]}"
    bench.write_clip(folder, FRAMES, 512, 320, ["background", "left_figure", "right_figure"])
    try:
        yield folder.name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_long_clip_workflow_edits_24_frames_in_windows_of_8(comfy, tiny_model, long_clip_folder):
    prompt = small(_prompt(), tiny_model, frames=FRAMES)
    kinds = _by_type(prompt)
    prompt[kinds["VideoGrainLoadVideo"][0]]["inputs"]["video"] = f"{long_clip_folder}/clip.mp4"
    prompt[kinds["VideoGrainLoadMasks"][0]]["inputs"]["masks_path"] = f"{long_clip_folder}/masks"
    prompt[kinds["VideoGrainLoadMasks"][0]]["inputs"]["frame_load_cap"] = ["2", 1]  # small() sets an int
    prompt[kinds["VideoGrainTemporalWindows"][0]]["inputs"].update(window=8, overlap=2, anchors=1)
    entry, progress = comfy.run_with_progress(prompt, timeout=600)
    [save] = kinds["VideoGrainSaveVideo"]
    [video] = comfy.output_files(entry["outputs"][save])
    assert video.suffix == ".mp4" and frames_of(video) == (FRAMES, (64, 128))  # 512×320 fitted into 128×128
    ticks = {(p["node"], p["max"]) for p in progress}
    assert (kinds["VideoGrainVAEDecode"][0], 6) in ticks  # 24 frames decoded 4 at a time
    assert (kinds["VideoGrainVAEEncode"][0], 6) in ticks
