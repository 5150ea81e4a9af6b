"""The media package (decoding, encoding, frame selection), without a ComfyUI host.

Test clips are made here with PyAV directly: a moving gradient whose top-left block carries the frame
index as brightness, so selection and order can be read back from the pixels.
"""
from __future__ import annotations

import json
import os
import pathlib
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from videograin.media import decode, encode
from videograin.media.selection import FrameSelection


def select_frames(frames, skip=0, nth=1, cap=0):
    """The kept frames of `frames` under the loaders' rule."""
    return (frame for _, frame in FrameSelection(cap, skip, nth).pick(frames))


LEVEL0, LEVEL_STEP, LEVELS = 16, 9, 26   # index i is drawn at brightness 16 + 9 (i mod 26) top left
BLOCK = 16


def frame_pixels(i: int, width: int, height: int) -> np.ndarray:
    """A horizontal gradient that moves 3 px per frame, with the index block in the top-left corner."""
    x = (np.arange(width)[None, :] * 4 + 3 * i) % 256
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = x
    img[..., 1] = (np.arange(height)[:, None] * 3) % 256
    img[..., 2] = 128
    img[:BLOCK, :BLOCK] = LEVEL0 + LEVEL_STEP * (i % LEVELS)
    return img


def index_of(rgb: np.ndarray) -> int:
    """Read back the index (mod 26) from a frame at source size (the block's centre avoids edge ringing)."""
    level = rgb[4:BLOCK - 4, 4:BLOCK - 4].astype(np.float64).mean()
    return int(round((level - LEVEL0) / LEVEL_STEP))


def tone(seconds: float, rate: int, channels: int, silent_until: float = 0.0) -> np.ndarray:
    """A 440 Hz tone [channels, samples], silent before `silent_until` seconds."""
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.5 * np.sin(2 * np.pi * 440 * t) * (t >= silent_until)
    return np.repeat(wave[None], channels, axis=0).astype(np.float32)


def make_clip(path, frames=12, width=96, height=64, fps=8, codec="libx264", fmt=None, audio=None, pix_fmt="yuv420p"):
    """Write a test clip with PyAV; `audio` = (waveform [C, T], rate) adds an AAC/Opus track."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "4"}
        astream = None
        if audio is not None:
            wave, rate = audio
            layout = "mono" if wave.shape[0] == 1 else "stereo"
            astream = out.add_stream("libopus" if fmt == "webm" else "aac", rate=rate, layout=layout)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i, width, height), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        if astream is not None:
            aframe = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave), format="fltp", layout=layout)
            aframe.sample_rate, aframe.pts = rate, 0
            out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
    return str(path)


def counting(frames):
    """Wrap a frame generator; `pulled[0]` counts frames taken from it (i.e. decoded)."""
    pulled = [0]

    def gen():
        for f in frames:
            pulled[0] += 1
            yield f
    return gen(), pulled


# --- selection --------------------------------------------------------------------------------------


def fake_source(n):
    return (decode.SourceFrame(i, i / 8, lambda i=i: np.full((2, 2, 3), i, np.uint8)) for i in range(n))


@pytest.mark.parametrize("skip,nth,cap,expected", [
    (0, 1, 0, list(range(20))),
    (0, 1, 5, [0, 1, 2, 3, 4]),
    (3, 1, 4, [3, 4, 5, 6]),
    (2, 3, 0, [2, 5, 8, 11, 14, 17]),
    (1, 4, 3, [1, 5, 9]),
    (19, 5, 10, [19]),
    (20, 1, 0, []),
    (0, 25, 0, [0]),
])
def test_select_frames_picks_skip_nth_cap(skip, nth, cap, expected):
    source, pulled = counting(fake_source(20))
    got = [f.index for f in select_frames(source, skip, nth, cap)]
    assert got == expected
    # Never pulls a frame beyond the last kept one when a cap ends the selection early.
    if cap and len(expected) == cap:
        assert pulled[0] == expected[-1] + 1


def test_select_frames_rejects_bad_arguments():
    with pytest.raises(ValueError):
        list(select_frames(fake_source(3), 0, 0, 0))
    with pytest.raises(ValueError):
        list(select_frames(fake_source(3), -1, 1, 0))


def test_streamed_decode_stops_at_the_cap(tmp_path):
    path = make_clip(tmp_path / "long.mp4", frames=120, width=64, height=64)
    source, pulled = counting(decode.iter_source_frames(path))
    kept = list(select_frames(source, skip=5, nth=3, cap=4))
    source.close()
    assert [f.index for f in kept] == [5, 8, 11, 14]
    assert [index_of(f.rgb()) for f in kept] == [5, 8, 11, 14]
    assert pulled[0] == 15  # frames 0..14 decoded, none of the 105 after the last kept one


def test_skipped_frames_are_never_converted(tmp_path):
    path = make_clip(tmp_path / "c.mp4", frames=10, width=64, height=64)
    converted = []
    frames = []
    for f in decode.iter_source_frames(path):
        load = f._load
        f._load = lambda load=load, i=f.index: converted.append(i) or load()
        frames.append(f)
    for f in select_frames(iter(frames), skip=4, nth=2, cap=0):
        f.rgb()
    assert converted == [4, 6, 8]


# --- reading containers and folders -----------------------------------------------------------------


@pytest.mark.parametrize("name,codec,fmt,pix_fmt", [
    ("clip.mp4", "libx264", None, "yuv420p"),
    ("clip.mov", "libx264", None, "yuv420p"),
    ("clip.mkv", "libx264", None, "yuv420p"),
    ("clip.webm", "libvpx-vp9", "webm", "yuv420p"),
])
def test_decode_containers(tmp_path, name, codec, fmt, pix_fmt):
    path = make_clip(tmp_path / name, frames=10, width=96, height=64, fps=12, codec=codec, fmt=fmt, pix_fmt=pix_fmt)
    info = decode.probe(path)
    assert (info.width, info.height, info.is_folder, info.has_audio) == (96, 64, False, False)
    assert info.fps == pytest.approx(12.0)
    frames = list(decode.iter_source_frames(path))
    assert [index_of(f.rgb()) for f in frames] == list(range(10))
    assert frames[0].rgb().shape == (64, 96, 3) and frames[0].rgb().dtype == np.uint8
    assert [f.time for f in frames] == pytest.approx([i / 12 for i in range(10)], abs=1e-3)


@pytest.mark.parametrize("degrees,corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_display_rotation_is_applied(tmp_path, degrees, corner):
    """Phone videos store landscape pixels plus a display matrix; frames must come out as shown."""
    path = str(tmp_path / "rotated.mp4")
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        stream.set_display_rotation(degrees)  # counter-clockwise, as VideoFrame.rotation reads it back
        for i in range(3):
            img = np.zeros((32, 64, 3), np.uint8)
            img[:8, :8] = 255  # a white block in the stored top-left corner
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    info = decode.probe(path)
    shown = (32, 64) if degrees % 180 else (64, 32)
    assert (info.width, info.height) == shown
    rgb = next(decode.iter_source_frames(path)).rgb()
    assert rgb.shape == (shown[1], shown[0], 3)
    h, w = rgb.shape[:2]
    corners = {"top-left": rgb[:8, :8], "top-right": rgb[:8, w - 8:], "bottom-left": rgb[h - 8:, :8],
               "bottom-right": rgb[h - 8:, w - 8:]}
    assert corners.pop(corner).mean() > 200
    assert all(block.mean() < 50 for block in corners.values())


def test_decode_gif_with_odd_size(tmp_path):
    path = str(tmp_path / "clip.gif")
    with av.open(path, "w", format="gif") as out:
        stream = out.add_stream("gif", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 33, 21, "rgb8"
        for i in range(7):
            frame = av.VideoFrame.from_ndarray(np.full((21, 33, 3), 32 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    info = decode.probe(path)
    assert (info.width, info.height) == (33, 21)
    frames = [f.rgb() for f in decode.iter_source_frames(path)]
    assert len(frames) == 7
    means = [f.mean() for f in frames]
    assert means == sorted(means) and means[-1] - means[0] > 150


def test_frame_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    order = [0, 1, 2, 9, 10, 11]  # names f0..f11: a plain sort would put f10 before f2
    for i in order:
        ext = "jpg" if i == 9 else "png"
        Image.fromarray(frame_pixels(i, 40, 30)).save(folder / f"f{i}.{ext}", quality=98)
    (folder / "notes.txt").write_text("not a frame")
    Image.fromarray(frame_pixels(0, 40, 30)).save(folder / ".hidden.png")
    info = decode.probe(str(folder))
    assert (info.is_folder, info.width, info.height, info.frame_count, info.fps) == (True, 40, 30, 6, decode.FOLDER_FPS)
    frames = list(decode.iter_source_frames(str(folder)))
    assert [index_of(f.rgb()) for f in frames] == order
    assert decode.read_audio(str(folder), 0, None) is None


def test_probe_rejects_what_is_not_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(decode.MediaReadError):
        decode.probe(str(junk))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(decode.MediaReadError, match="no png/jpg/jpeg/webp/bmp/tif/tiff frames"):
        decode.probe(str(empty))
    audio_only = tmp_path / "audio.m4a"
    with av.open(str(audio_only), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=16000, layout="mono")
        f = av.AudioFrame.from_ndarray(tone(0.5, 16000, 1), format="fltp", layout="mono")
        f.sample_rate, f.pts = 16000, 0
        out.mux(s.encode(f))
        out.mux(s.encode(None))
    with pytest.raises(decode.MediaReadError, match="no video stream"):
        decode.probe(str(audio_only))


# --- audio ------------------------------------------------------------------------------------------


def test_audio_is_trimmed_to_the_selected_span(tmp_path):
    rate, fps = 44100, 8
    wave = tone(3.0, rate, 2, silent_until=1.0)  # silent for the first 8 frames, loud after
    path = make_clip(tmp_path / "a.mp4", frames=24, width=64, height=64, fps=fps, audio=(wave, rate))
    assert decode.probe(path).has_audio

    full, got_rate = decode.read_audio(path, 0.0, None)
    assert got_rate == rate and full.shape[0] == 2 and full.dtype == np.float32
    assert full.shape[1] / rate == pytest.approx(3.0, abs=0.05)

    # Frames 8..15 (skip 8, cap 8): one second starting where the tone starts.
    kept = list(select_frames(decode.iter_source_frames(path), skip=8, nth=1, cap=8))
    start, end = kept[0].time, kept[-1].time + 1 / fps
    part, _ = decode.read_audio(path, start, end)
    assert part.shape[1] == pytest.approx(rate * 1.0, abs=2)
    assert np.sqrt((part[:, 200:] ** 2).mean()) > 0.25  # loud throughout (a 0.5 sine has rms 0.35)

    quiet, _ = decode.read_audio(path, 0.0, 0.9)
    assert quiet.shape[1] == pytest.approx(rate * 0.9, abs=2)
    assert np.abs(quiet[:, : rate // 2]).max() < 0.05


def test_read_audio_of_silent_clip_is_none(tmp_path):
    path = make_clip(tmp_path / "v.mp4", frames=4, width=64, height=64)
    assert decode.read_audio(path, 0, None) is None
    assert not decode.probe(path).has_audio


# --- writing ----------------------------------------------------------------------------------------


def clip_frames(n, width, height):
    return np.stack([frame_pixels(i, width, height) for i in range(n)])


def test_to_uint8_frames():
    f = np.zeros((2, 3, 4, 4), np.float32)
    f[..., 0] = 1.2
    f[..., 1] = 0.5
    f[..., 3] = 0.7  # alpha is dropped
    out = encode.to_uint8_frames(f)
    assert out.shape == (2, 3, 4, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [255, 128, 0]
    gray = encode.to_uint8_frames(np.full((1, 2, 2, 1), 0.25, np.float32))
    assert gray[0, 0, 0].tolist() == [64, 64, 64]
    with pytest.raises(ValueError):
        encode.to_uint8_frames(np.zeros((2, 3, 4), np.float32))


def test_write_mp4_round_trip_odd_size_audio_and_tags(tmp_path):
    frames = clip_frames(10, 63, 45)
    rate = 22050
    wave = tone(2.0, rate, 1)  # longer than the 10/12 s of video: cut to the video
    path = str(tmp_path / "out.mp4")
    tags = {"comment": "hello", "prompt": json.dumps({"1": {"class_type": "X"}}), "workflow": json.dumps({"n": 1})}
    encode.write_mp4(path, frames, 12.0, 19, (wave, rate), tags)

    info = decode.probe(path)
    assert (info.width, info.height) == (64, 46)  # padded to even for yuv420p
    assert info.fps == pytest.approx(12.0) and info.has_audio
    decoded = [f.rgb() for f in decode.iter_source_frames(path)]
    assert len(decoded) == 10
    assert [index_of(d) for d in decoded] == list(range(10))
    # The padding repeats the last column/row instead of adding a black edge.
    assert np.abs(decoded[3][:, 63].astype(int) - decoded[3][:, 62].astype(int)).mean() < 6
    audio, got_rate = decode.read_audio(path, 0, None)
    assert got_rate == rate and audio.shape[0] == 1
    assert audio.shape[1] / rate == pytest.approx(10 / 12, abs=0.06)
    with av.open(path) as c:
        meta = dict(c.metadata)
    assert meta["comment"] == "hello"
    assert json.loads(meta["prompt"]) == {"1": {"class_type": "X"}}
    assert json.loads(meta["workflow"]) == {"n": 1}


def test_write_mp4_resamples_audio_rates_aac_cannot_carry(tmp_path):
    path = str(tmp_path / "r.mp4")
    encode.write_mp4(path, clip_frames(8, 64, 64), 8.0, 23, (tone(1.0, 12345, 2), 12345))
    audio, rate = decode.read_audio(path, 0, None)
    assert rate == 48000 and audio.shape[0] == 2
    assert audio.shape[1] / rate == pytest.approx(1.0, abs=0.05)


def test_write_mp4_folds_many_channels_to_stereo(tmp_path):
    path = str(tmp_path / "c.mp4")
    encode.write_mp4(path, clip_frames(8, 64, 64), 8.0, 23, (tone(1.0, 48000, 6), 48000))
    audio, rate = decode.read_audio(path, 0, None)
    assert audio.shape[0] == 2 and rate == 48000


def test_write_gif_keeps_identical_frames_and_comment(tmp_path):
    frames = clip_frames(6, 33, 21)
    frames[2] = frames[1]
    frames[3] = frames[1]  # three identical frames in a row: Pillow would merge them
    path = str(tmp_path / "o.gif")
    encode.write_gif(path, frames, 10.0, json.dumps({"prompt": {"a": 1}}))
    decoded = [f.rgb() for f in decode.iter_source_frames(path)]
    assert len(decoded) == 6
    assert decoded[0].shape == (21, 33, 3)
    assert [index_of(d) for d in decoded] == [0, 1, 1, 1, 4, 5]
    assert np.abs(decoded[5].astype(int) - frames[5].astype(int)).mean() < 6  # adaptive palette, close colours
    assert decode.probe(path).fps == pytest.approx(10.0)
    with Image.open(path) as im:
        assert json.loads(im.info["comment"]) == {"prompt": {"a": 1}}
        assert im.info["loop"] == 0


def test_write_webp_of_one_frame_keeps_its_exif(tmp_path):
    # libwebp writes a single frame as a simple (VP8) file; the EXIF needs the extended header.
    path = str(tmp_path / "one.webp")
    encode.write_webp(path, clip_frames(1, 41, 31), 8.0, {"prompt": '{"p": 1}'})
    with Image.open(path) as im:
        assert im.size == (41, 31) and im.getexif()[0x0110] == 'prompt:{"p": 1}'
        assert index_of(np.asarray(im.convert("RGB"))) == 0


def test_write_webp_keeps_identical_frames_and_exif(tmp_path):
    frames = clip_frames(5, 41, 31)
    frames[1] = frames[0]
    path = str(tmp_path / "o.webp")
    encode.write_webp(path, frames, 8.0, {"prompt": '{"p": 1}', "workflow": '{"w": 2}'})
    with Image.open(path) as im:
        assert im.n_frames == 5 and im.size == (41, 31)
        assert im.info["loop"] == 0
        exif = im.getexif()
        assert exif[0x0110] == 'prompt:{"p": 1}'
        assert exif[0x010F] == 'workflow:{"w": 2}'
        got = []
        for i in range(im.n_frames):
            im.seek(i)
            got.append(index_of(np.asarray(im.convert("RGB"))))
    assert got == [0, 0, 2, 3, 4]


def test_write_png_frames_with_text_chunks(tmp_path):
    frames = clip_frames(3, 17, 9)
    folder = str(tmp_path / "pngs")
    names = encode.write_png_frames(folder, frames, {"prompt": '{"p": 1}', "workflow": '{"w": 2}'})
    assert names == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    for i, name in enumerate(names):
        with Image.open(os.path.join(folder, name)) as im:
            assert im.text == {"prompt": '{"p": 1}', "workflow": '{"w": 2}'}
            assert np.array_equal(np.asarray(im), frames[i])  # lossless
    assert len(list(decode.iter_source_frames(folder))) == 3  # and the folder loads back as a clip


# --- never overwrite, never leave partial files -----------------------------------------------------


def test_save_new_never_overwrites(tmp_path):
    (tmp_path / "edit_00001_.mp4").write_bytes(b"first")
    (tmp_path / "edit_00002_.mp4").write_bytes(b"second")

    def write(p):
        pathlib.Path(p).write_bytes(b"new")

    final = encode.save_new(str(tmp_path), lambda n: f"edit_{n:05}_.mp4", 1, write)
    assert os.path.basename(final) == "edit_00003_.mp4"
    assert (tmp_path / "edit_00001_.mp4").read_bytes() == b"first"
    assert (tmp_path / "edit_00002_.mp4").read_bytes() == b"second"
    assert pathlib.Path(final).read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["edit_00001_.mp4", "edit_00002_.mp4", "edit_00003_.mp4"]


def test_save_new_folder_never_overwrites(tmp_path):
    (tmp_path / "f_00001_").mkdir()
    (tmp_path / "f_00001_" / "keep.png").write_bytes(b"k")
    final = encode.save_new(str(tmp_path), lambda n: f"f_{n:05}_", 1,
                         lambda p: encode.write_png_frames(p, clip_frames(2, 8, 8)), is_folder=True)
    assert os.path.basename(final) == "f_00002_"
    assert sorted(os.listdir(final)) == ["frame_00000.png", "frame_00001.png"]
    assert os.listdir(tmp_path / "f_00001_") == ["keep.png"]
    assert sorted(os.listdir(tmp_path)) == ["f_00001_", "f_00002_"]


@pytest.mark.parametrize("is_folder", [False, True])
def test_save_new_removes_the_partial_output_on_failure(tmp_path, is_folder):
    (tmp_path / "other.txt").write_text("untouched")
    frames = clip_frames(80, 64, 64)  # past x264's lookahead, so packets reach the file before the failure
    partial_existed = []

    def frames_then_fail(p):
        for i, f in enumerate(frames):
            if i == 70:
                partial_existed.append(os.path.getsize(p) > 0 if os.path.exists(p) else False)
                raise RuntimeError("simulated failure mid-encode")
            yield f

    def write(p):
        if is_folder:
            encode.write_png_frames(p, frames[:2])
            partial_existed.append(os.path.exists(p))
            raise RuntimeError("simulated failure mid-encode")
        # A real encode that dies half way: the frames run out with an error after some were muxed.
        encode.write_mp4(p, _Frames(frames_then_fail(p), frames[0], len(frames)), 8.0)

    with pytest.raises(RuntimeError, match="simulated"):
        encode.save_new(str(tmp_path), lambda n: f"x_{n:05}_" + ("" if is_folder else ".mp4"), 1, write, is_folder)
    assert partial_existed == [True]
    assert os.listdir(tmp_path) == ["other.txt"]


class _Frames:
    """A frame sequence that looks like an array to write_mp4 but comes from a generator."""

    def __init__(self, gen, first, n):
        self.gen, self.first, self.n = gen, first, n

    def __getitem__(self, i):
        assert i == 0
        return self.first

    def __len__(self):
        return self.n

    def __iter__(self):
        return self.gen
