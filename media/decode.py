"""Decoding video files, frame folders and single images with PyAV and Pillow (no ComfyUI imports).

Decoding is streamed: `iter_source_frames` yields lazily decoded frames and
`media.selection.FrameSelection.pick` pulls only as many as skip/nth/cap need, so capping a long file
stops decoding early. Frames come upright: a display-matrix rotation (phone videos) is applied to every
decoded frame, for clips and label videos alike. Every decode failure is a `MediaReadError` naming the
file, which the node layer rewords with the node, the input and the fix.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import av
import numpy as np
from PIL import Image

from .files import IMAGE_EXTENSIONS, list_frame_files

FOLDER_FPS = 8.0  # a frame folder carries no rate; VideoGrain's clips are 8 fps


class MediaReadError(Exception):
    """A file or folder that exists but cannot be decoded; `path` is the file that failed."""

    def __init__(self, message: str, path: str | None = None):
        self.path = path
        super().__init__(message)


# --- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceInfo:
    """What a video file or frame folder holds, read from headers (frame_count may be an estimate)."""

    path: str
    is_folder: bool
    width: int
    height: int
    fps: float
    frame_count: Optional[int]
    has_audio: bool


@dataclass
class SourceFrame:
    """One source frame: its index, presentation time in seconds, and a lazy RGB loader."""

    index: int
    time: float
    _load: Callable[[], np.ndarray]

    def rgb(self) -> np.ndarray:
        """The frame as uint8 `[H, W, 3]`."""
        return self._load()


def _stream_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return FOLDER_FPS


def probe(path: str) -> SourceInfo:
    """Read size (as displayed), fps, frame count and audio presence; MediaReadError if not decodable.

    Decodes the first frame of a file, which also proves the stream is decodable.
    """
    if os.path.isdir(path):
        files = list_frame_files(path)
        if not files:
            raise MediaReadError(f"folder {path} holds no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} frames", path)
        try:
            with Image.open(files[0]) as im:
                width, height = im.size
        except (OSError, ValueError) as exc:
            raise MediaReadError(f"frame {files[0]} is not a readable image ({exc})", files[0]) from exc
        return SourceInfo(path, True, width, height, FOLDER_FPS, len(files), False)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaReadError(f"{path} has no video stream", path)
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width <= 0 or height <= 0:
                raise MediaReadError(f"{path} has a video stream without a frame size", path)
            count = stream.frames or None
            fps = _stream_fps(stream)
            if count is None and container.duration:
                count = max(1, round(container.duration / av.time_base * fps))
            first = next(container.decode(stream), None)
            if first is None:
                raise MediaReadError(f"{path} holds no decodable frames", path)
            if _quarter_turns(first) % 2:  # shown portrait/landscape the other way round
                width, height = height, width
            return SourceInfo(path, False, width, height, fps, count, bool(container.streams.audio))
    except av.FFmpegError as exc:
        raise MediaReadError(f"{path} is not a readable video ({exc})", path) from exc


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns the display matrix asks for (phone videos), 0..3."""
    try:
        return round((frame.rotation or 0) / 90) % 4
    except (AttributeError, ValueError):
        return 0


def _display_rgb(frame: av.VideoFrame) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    turns = _quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def read_rgb(path: str) -> np.ndarray:
    """An image file as writable uint8 `[H, W, 3]`; MediaReadError when it cannot be decoded (also a
    truncated file, which Pillow only notices while reading the pixels)."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy: torch.from_numpy warns on read-only arrays
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaReadError(f"{path} is not a readable image ({exc})", path) from exc


def read_grey(path: str) -> np.ndarray:
    """An image file as float32 grey 0..1 (8- and 16-bit PNGs; colour images by luminance)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im, dtype=np.float32) / 65535.0
            if im.mode == "F":
                return np.asarray(im, dtype=np.float32)
            return np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as exc:
        raise MediaReadError(f"{path} is not a readable image ({exc})", path) from exc


def iter_source_frames(path: str) -> Iterator[SourceFrame]:
    """Yield every frame of a video file or frame folder in order, decoding one at a time.

    Nothing is converted to RGB until `SourceFrame.rgb()` is called, so frames that are skipped cost
    only their decode. Frames come upright (a display-matrix rotation is applied). Closing the
    generator closes the file.
    """
    if os.path.isdir(path):
        for i, file in enumerate(list_frame_files(path)):
            yield SourceFrame(i, i / FOLDER_FPS, lambda file=file: read_rgb(file))
        return
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise MediaReadError(f"{path} has no video stream", path)
            stream = container.streams.video[0]
            fps = _stream_fps(stream)
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / fps
                yield SourceFrame(i, t, lambda frame=frame: _display_rgb(frame))
    except av.FFmpegError as exc:
        raise MediaReadError(f"{path} could not be decoded ({exc})", path) from exc


def read_audio(path: str, start: float, end: Optional[float]) -> Optional[tuple[np.ndarray, int]]:
    """Decode the first audio stream between `start` and `end` seconds (None = to the end).

    Returns float32 `[channels, samples]` and the sample rate, or None when the file has no audio.
    """
    if os.path.isdir(path):
        return None
    with av.open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        chunks: list[np.ndarray] = []
        resampler = None
        for frame in container.decode(stream):
            if resampler is None:  # planar float keeps [channels, samples] whatever the source format
                resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=rate)
            t0 = float(frame.time) if frame.time is not None else 0.0
            if end is not None and t0 >= end:
                break
            for out in resampler.resample(frame):
                data = out.to_ndarray()
                first = max(0, round((start - t0) * rate))
                last = data.shape[1] if end is None else min(data.shape[1], round((end - t0) * rate))
                if last > first:
                    chunks.append(data[:, first:last])
                t0 += out.samples / rate
        channels = stream.codec_context.channels or 1
        if not chunks:
            return np.zeros((channels, 0), np.float32), rate
        return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), rate


