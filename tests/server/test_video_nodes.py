"""VideoGrainLoadVideo and VideoGrainSaveVideo through the real ComfyUI server.

Test clips are written with PyAV into a fresh subfolder of the server's input folder (removed
afterwards): a moving gradient whose top-left block carries the frame index as brightness.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

LOAD, SAVE = "VideoGrainLoadVideo", "VideoGrainSaveVideo"
W, H, FPS, FRAMES, RATE = 128, 64, 12, 24, 44100  # 128x64 is already a multiple of 64: keep_aspect 0x0 keeps it
BLOCK = 16


def frame_pixels(i: int, width: int, height: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (np.arange(width)[None, :] * 4 + 3 * i) % 256
    img[..., 1] = (np.arange(height)[:, None] * 3) % 256
    img[..., 2] = 128
    img[:BLOCK, :BLOCK] = 16 + 9 * i
    return img


def index_of(rgb: np.ndarray) -> int:
    return int(round((rgb[4:BLOCK - 4, 4:BLOCK - 4].astype(np.float64).mean() - 16) / 9))


def write_clip(path: Path, frames: int, audio_seconds: float = 0.0) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "4"}
        astream = out.add_stream("aac", rate=RATE, layout="stereo") if audio_seconds else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, W, H), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            t = np.arange(int(audio_seconds * RATE)) / RATE
            wave = np.stack([0.4 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
            aframe = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts = RATE, 0
            out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))


@pytest.fixture(scope="module")
def media(comfy_server):
    """Names (relative to the input folder) of the test clips."""
    sub = f"vg-video-test-{uuid.uuid4().hex[:8]}"
    root = Path(comfy_server.input_dir) / sub
    root.mkdir(parents=True)
    write_clip(root / "clip.mp4", FRAMES, audio_seconds=FRAMES / FPS)
    write_clip(root / "silent.mp4", 10)
    (root / "frames").mkdir()
    for i in range(6):
        Image.fromarray(frame_pixels(i, 41, 29)).save(root / "frames" / f"img{i}.png")
    (root / "junk.mp4").write_bytes(b"definitely not a video " * 64)
    try:
        yield {"clip": f"{sub}/clip.mp4", "silent": f"{sub}/silent.mp4", "frames": f"{sub}/frames",
               "junk": f"{sub}/junk.mp4", "missing": f"{sub}/missing.mp4", "dir": root}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def load_node(video, cap=0, skip=0, nth=1, size_mode="keep_aspect", width=0, height=0, path=None):
    inputs = {"video": video, "frame_load_cap": cap, "skip_first_frames": skip, "select_every_nth": nth,
              "size_mode": size_mode, "width": width, "height": height}
    if path is not None:
        inputs["path"] = path
    return {"class_type": LOAD, "inputs": inputs}


def save_node(fmt="mp4 (h264)", prefix="vgtest/clip", crf=19, audio=True, load_id="1"):
    inputs = {"images": [load_id, 0], "fps": [load_id, 2], "filename_prefix": prefix, "format": fmt, "crf": crf}
    if audio:
        inputs["audio"] = [load_id, 3]
    return {"class_type": SAVE, "inputs": inputs}


def saved(comfy, outputs, node_id="2") -> list[Path]:
    return comfy.output_files({node_id: outputs[node_id]})


def decode(path: Path):
    """(frames as uint8 arrays, fps, audio samples per channel or None, sample rate, metadata)."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
        meta = dict(c.metadata)
    samples = rate = None
    with av.open(str(path)) as c:
        if c.streams.audio:
            rate = c.streams.audio[0].codec_context.sample_rate
            samples = sum(f.samples for f in c.decode(audio=0))
    return frames, fps, samples, rate, meta


# --- schema -----------------------------------------------------------------------------------------


def test_schema_and_input_listing(comfy, media):
    info = comfy.object_info(LOAD)
    required = info["input"]["required"]
    assert list(required) == ["video", "frame_load_cap", "skip_first_frames", "select_every_nth", "size_mode",
                              "width", "height"]
    assert list(info["input"]["optional"]) == ["path"]
    combo = required["video"][0]
    options = combo if isinstance(combo, list) else required["video"][1]["options"]
    for name in ("clip", "silent", "frames", "junk"):
        assert media[name] in options
    assert info["output_name"] == ["images", "frame_count", "fps", "audio", "source_width", "source_height"]
    assert info["output"] == ["IMAGE", "INT", "FLOAT", "AUDIO", "INT", "INT"]
    assert info["category"] == "VideoGrain/io"

    info = comfy.object_info(SAVE)
    assert list(info["input"]["required"]) == ["images", "fps", "filename_prefix", "format", "crf"]
    assert list(info["input"]["optional"]) == ["audio"]
    assert info["output_node"] is True and info["output_name"] == ["filename"]


# --- round trips ------------------------------------------------------------------------------------


def test_round_trip_keeps_frames_fps_size_and_audio(comfy, comfy_server, media):
    prompt = {"1": load_node(media["clip"]), "2": save_node(prefix="vgtest/roundtrip")}
    outputs = comfy.run(prompt)
    ui = outputs["2"]
    assert ui["animated"] == [True]
    [path] = saved(comfy, outputs)
    assert path.suffix == ".mp4" and path.is_file()
    assert path.parent == Path(comfy_server.output_dir) / "vgtest"

    frames, fps, samples, rate, meta = decode(path)
    assert len(frames) == FRAMES
    assert fps == pytest.approx(FPS)
    assert frames[0].shape == (H, W, 3)
    assert [index_of(f) for f in frames] == list(range(FRAMES))
    assert rate == RATE
    assert samples / rate == pytest.approx(FRAMES / FPS, abs=0.05)
    assert json.loads(meta["prompt"])["1"]["class_type"] == LOAD


def test_skip_nth_cap_and_sizing_through_the_server(comfy, media):
    prompt = {"1": load_node(media["clip"], cap=4, skip=3, nth=2, width=256, height=256),
              "2": save_node(fmt="png frames", prefix="vgtest/select", audio=False),
              "3": save_node(prefix="vgtest/select", audio=True)}
    outputs = comfy.run(prompt)
    pngs = saved(comfy, outputs, "2")
    assert [p.name for p in pngs] == [f"frame_{i:05d}.png" for i in range(4)]
    assert outputs["2"]["animated"] == [False]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    assert images[0].shape == (128, 256, 3)  # 128x64 fitted into 256x256, aspect kept
    # The index block is upscaled 2x: read it at source scale.
    assert [index_of(img[::2, ::2]) for img in images] == [3, 5, 7, 9]

    [mp4] = saved(comfy, outputs, "3")
    frames, fps, samples, rate, _ = decode(mp4)
    assert len(frames) == 4
    assert fps == pytest.approx(FPS / 2)  # every 2nd frame: half the rate, same duration per frame
    assert samples / rate == pytest.approx(4 * 2 / FPS, abs=0.05)  # audio under the 4 kept frames only


def test_every_format_keeps_the_frame_count(comfy, media):
    prompt = {"1": load_node(media["frames"])}
    for i, fmt in enumerate(["mp4 (h264)", "webp", "gif", "png frames"]):
        prompt[str(10 + i)] = save_node(fmt=fmt, prefix="vgtest/formats", audio=False)
    outputs = comfy.run(prompt)
    mp4, webp, gif = (saved(comfy, outputs, n)[0] for n in ("10", "11", "12"))
    pngs = saved(comfy, outputs, "13")
    assert len(decode(mp4)[0]) == 6 and len(decode(gif)[0]) == 6 and len(pngs) == 6
    with Image.open(webp) as im:
        assert im.n_frames == 6 and im.size == (64, 64)  # 41x29 keeps aspect: sides snap to 64
        assert "prompt:" in im.getexif()[0x0110]
    with Image.open(gif) as im:
        assert json.loads(im.info["comment"])["prompt"]["1"]["class_type"] == LOAD
    with Image.open(pngs[0]) as im:
        assert json.loads(im.text["prompt"])["1"]["class_type"] == LOAD
    assert decode(mp4)[1] == pytest.approx(8.0)  # a frame folder loads at 8 fps


def test_no_audio_is_none_and_savers_accept_it(comfy, media):
    """A silent source gives audio=None; our saver and core CreateVideo -> SaveVideo both take it."""
    prompt = {"1": load_node(media["silent"]), "2": save_node(prefix="vgtest/silent"),
              "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": ["1", 2], "audio": ["1", 3]}},
              "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "vgtest/core_silent",
                                                          "format": "auto", "codec": "auto"}},
              "5": load_node(media["clip"]),
              "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": ["5", 2], "audio": ["5", 3]}},
              "7": {"class_type": "SaveVideo", "inputs": {"video": ["6", 0], "filename_prefix": "vgtest/core_audio",
                                                          "format": "auto", "codec": "auto"}}}
    outputs = comfy.run(prompt)
    frames, _, samples, _, _ = decode(saved(comfy, outputs, "2")[0])
    assert len(frames) == 10 and samples is None
    frames, _, samples, _, _ = decode(saved(comfy, outputs, "4")[0])
    assert len(frames) == 10 and samples is None
    frames, _, samples, rate, _ = decode(saved(comfy, outputs, "7")[0])
    assert len(frames) == FRAMES and rate == RATE and samples / rate == pytest.approx(FRAMES / FPS, abs=0.05)


def test_second_save_never_overwrites(comfy, media):
    prefix = f"vgtest/again_{uuid.uuid4().hex[:6]}"
    first = saved(comfy, comfy.run({"1": load_node(media["silent"]), "2": save_node(prefix=prefix, crf=20)}))[0]
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    # A different crf makes the saver run again with the same prefix.
    second = saved(comfy, comfy.run({"1": load_node(media["silent"]), "2": save_node(prefix=prefix, crf=30)}))[0]
    assert first != second
    assert first.name.endswith("_00001_.mp4") and second.name.endswith("_00002_.mp4")
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in first.parent.glob(f"{Path(prefix).name}*")) == [first.name, second.name]
    assert not list(first.parent.glob(".*"))  # no temporary files left behind


def test_absolute_path_input(comfy, media):
    folder = media["dir"] / "frames"
    outputs = comfy.run({"1": load_node(media["clip"], path=str(folder)),
                         "2": save_node(fmt="png frames", prefix="vgtest/abs", audio=False)})
    assert len(saved(comfy, outputs)) == 6  # the folder (6 frames), not the 24-frame clip


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,expect", [
    # A list value must be one of the listed files in the input folder: core's own check says so.
    ("missing", ["Value not in list: video", "missing.mp4"]),
    ("junk", ["VideoGrainLoadVideo input 'video'", "not a readable video", "Fix:"]),
    ("skip", ["VideoGrainLoadVideo input 'skip_first_frames'", "only 24", "Fix: set skip_first_frames below 24"]),
    ("path", ["VideoGrainLoadVideo input 'path'", "no video file or frame folder"]),
    ("crop0", ["VideoGrainLoadVideo input 'width'", "Fix:"]),
])
def test_bad_inputs_are_named_errors_and_the_server_keeps_serving(comfy, media, case, expect):
    load = {
        "missing": load_node(media["missing"]),
        "junk": load_node(media["junk"]),
        "skip": load_node(media["clip"], skip=50),
        "path": load_node(media["clip"], path=str(media["dir"] / "nowhere.mov")),
        "crop0": load_node(media["clip"], size_mode="crop", width=0, height=256),
    }[case]
    prefix = f"vgtest/bad_{case}"
    message = comfy.run_expect_error({"1": load, "2": save_node(prefix=prefix)})
    for part in expect:
        assert part in message
    assert message.count(expect[0]) == 1, message  # one message per problem, under the right input
    assert "comfyui-videograin" not in message  # error types read "videograin.…", not a module path
    assert not list((Path(comfy.output_dir) / "vgtest").glob(f"bad_{case}*"))  # nothing written
    # The server still runs a good prompt afterwards.
    outputs = comfy.run({"1": load_node(media["silent"], cap=2), "2": save_node(prefix=f"vgtest/after_{case}")})
    assert len(decode(saved(comfy, outputs)[0])[0]) == 2


def test_load_reports_progress_per_kept_frame(comfy, media):
    prompt = {"1": load_node(media["clip"], nth=2), "2": save_node(prefix="vgtest/progress", audio=False)}
    _, progress = comfy.run_with_progress(prompt)
    loads = [p for p in progress if p.get("node") == "1"]
    assert loads and loads[-1]["value"] == loads[-1]["max"] == FRAMES // 2
