"""Encoding frames to mp4 (H.264 + AAC), animated webp, gif or PNG frames, and never overwriting.

One output frame per input frame (Pillow's gif and libwebp's animation encoder merge identical
frames, so neither is used). Encodes are deterministic: x264 runs single-threaded, so the same frames
give the same bytes on every run (threaded x264 picks different decisions run to run). `save_new`
writes through a temporary name and claims the final name with a hard link, so an existing file is
never replaced and a failed write leaves nothing behind.
"""
from __future__ import annotations

import os
import struct
import uuid
from fractions import Fraction
from typing import Callable, Iterable, Optional

import av
import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

ENCODE_FORMATS = ("mp4", "webp", "gif")
WEBP_QUALITY = 90


# --- writing ---------------------------------------------------------------------------------------


def to_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """Float `[F, H, W, C]` in 0..1 (C = 1, 3 or 4; alpha dropped) to uint8 RGB `[F, H, W, 3]`."""
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected frames [F, H, W, 1|3|4], got shape {tuple(frames.shape)}")
    rgb = frames[..., :3] if frames.shape[-1] != 1 else np.repeat(frames, 3, axis=-1)
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _pad_even(frame: np.ndarray) -> np.ndarray:
    # yuv420p subsamples chroma 2x2: odd sides are padded by repeating the last row/column.
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _rate(fps: float) -> Fraction:
    return Fraction(round(fps * 1000), 1000)


def _add_audio_stream(container, waveform: np.ndarray, sample_rate: int):
    """Add an AAC stream and return (stream, waveform, rate), resampling rates AAC cannot carry."""
    codec = av.Codec("aac", "w")
    channels = waveform.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels)
    if layout is None:  # fold anything else to stereo rather than guess a surround layout
        waveform = np.stack([waveform.mean(axis=0)] * 2)
        layout = "stereo"
    rates = codec.audio_rates or ()
    if rates and sample_rate not in rates:
        waveform = _resample(waveform, layout, sample_rate, 48000)
        sample_rate = 48000
    return container.add_stream("aac", rate=sample_rate, layout=layout), waveform, sample_rate


def _resample(waveform: np.ndarray, layout: str, src: int, dst: int) -> np.ndarray:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(waveform, np.float32), format="fltp", layout=layout)
    frame.sample_rate = src
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=dst)
    parts = [f.to_ndarray() for f in resampler.resample(frame)] + [f.to_ndarray() for f in resampler.resample(None)]
    return np.concatenate(parts, axis=1) if parts else np.zeros((waveform.shape[0], 0), np.float32)


def _encode_frames(container, stream, frames: Iterable[av.VideoFrame]) -> None:
    for i, frame in enumerate(frames):
        frame.pts = i
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_mp4(path: str, frames: np.ndarray, fps: float, crf: int = 19,
              audio: Optional[tuple[np.ndarray, int]] = None, tags: Optional[dict[str, str]] = None) -> None:
    """H.264 yuv420p mp4 (odd sides padded to even) with optional AAC audio and string metadata tags.

    Audio longer than the video is cut to the video's duration.
    """
    # use_metadata_tags lets the mp4 muxer keep arbitrary keys ("prompt", "workflow"), not only iTunes ones
    with av.open(path, mode="w", format="mp4", options={"movflags": "use_metadata_tags"}) as container:
        container.metadata.update(tags or {})
        rate = _rate(fps)
        height, width = _pad_even(frames[0]).shape[:2]
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(int(crf))}
        stream.codec_context.thread_count = 1  # threaded x264 gives different bytes run to run
        audio_stream = None
        if audio is not None and audio[0].size:
            waveform, sample_rate = audio
            audio_stream, waveform, sample_rate = _add_audio_stream(container, waveform, sample_rate)
        _encode_frames(container, stream,
                       (av.VideoFrame.from_ndarray(_pad_even(f), format="rgb24") for f in frames))
        if audio_stream is not None:
            keep = int(round(len(frames) / float(rate) * sample_rate))
            clip = np.ascontiguousarray(waveform[:, :keep], np.float32)
            frame = av.AudioFrame.from_ndarray(clip, format="fltp", layout=audio_stream.layout.name)
            frame.sample_rate, frame.pts = sample_rate, 0
            container.mux(audio_stream.encode(frame))  # PyAV re-chunks to the codec's frame size
            container.mux(audio_stream.encode(None))


def _palette_frame(frame: np.ndarray) -> av.VideoFrame:
    # An adaptive 256-colour palette per frame; ffmpeg's gif encoder writes it as the local palette.
    quantized = Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT)
    palette = np.zeros((256, 4), np.uint8)
    rgb = np.asarray(quantized.getpalette()[:768], np.uint8).reshape(-1, 3)
    palette[:len(rgb), 1:] = rgb
    palette[:, 0] = 255  # PyAV wants ARGB
    return av.VideoFrame.from_ndarray((np.asarray(quantized), palette), format="pal8")


def write_gif(path: str, frames: np.ndarray, fps: float, comment: Optional[str] = None) -> None:
    """Looping gif, one image per frame (delays are whole centiseconds, as gif allows), optional comment."""
    with av.open(path, mode="w", format="gif", options={"loop": "0"}) as container:
        stream = container.add_stream("gif", rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "pal8"
        _encode_frames(container, stream, (_palette_frame(f) for f in frames))
    if comment:
        _gif_add_comment(path, comment)


def _gif_add_comment(path: str, text: str) -> None:
    """Insert a GIF89a comment extension after the logical screen descriptor (and global palette)."""
    with open(path, "rb") as fh:
        data = fh.read()
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    payload = text.encode("utf-8")
    blocks = b"".join(bytes([len(payload[i:i + 255])]) + payload[i:i + 255] for i in range(0, len(payload), 255))
    with open(path, "wb") as fh:
        fh.write(data[:at] + b"\x21\xfe" + blocks + b"\x00" + data[at:])


def write_webp(path: str, frames: np.ndarray, fps: float, tags: Optional[dict[str, str]] = None) -> None:
    """Looping lossy animated webp, one animation frame per input frame, tags stored as EXIF."""
    with av.open(path, mode="w", format="webp", options={"loop": "0"}) as container:
        stream = container.add_stream("libwebp", rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"quality": str(WEBP_QUALITY)}
        _encode_frames(container, stream, (av.VideoFrame.from_ndarray(f, format="rgb24") for f in frames))
    if tags:
        _webp_add_exif(path, webp_exif(tags), frames.shape[2], frames.shape[1])


def webp_exif(tags: dict[str, str]) -> bytes:
    """ComfyUI's webp convention: "prompt:<json>" in EXIF Model, other keys "<key>:<json>" from Make down."""
    exif = Image.Exif()
    tag = 0x010F
    for key, value in tags.items():
        if key == "prompt":
            exif[0x0110] = f"prompt:{value}"
        elif key != "comment":
            exif[tag] = f"{key}:{value}"
            tag -= 1
    raw = exif.tobytes()
    return raw[6:] if raw.startswith(b"Exif\x00\x00") else raw


def _webp_add_exif(path: str, exif: bytes, width: int, height: int) -> None:
    """Append an EXIF chunk to a webp and set the VP8X EXIF flag. A one-frame clip comes out of libwebp
    as a simple (VP8/VP8L) file, which gets the VP8X header that EXIF needs first."""
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError(f"{path} is not a webp")
    if data[12:16] in (b"VP8 ", b"VP8L"):
        canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        data[12:12] = b"VP8X" + struct.pack("<I", 10) + bytes([0, 0, 0, 0]) + canvas
    elif data[12:16] != b"VP8X":
        raise ValueError(f"{path} is not a webp this writer knows ({bytes(data[12:16])!r})")
    data[20] |= 0x08  # VP8X flags byte: EXIF present
    data += b"EXIF" + struct.pack("<I", len(exif)) + exif + (b"\x00" if len(exif) % 2 else b"")
    data[4:8] = struct.pack("<I", len(data) - 8)
    with open(path, "wb") as fh:
        fh.write(data)


def write_png_frames(folder: str, frames: np.ndarray, tags: Optional[dict[str, str]] = None) -> list[str]:
    """Write frame_00000.png, ... into `folder` (created), each with `tags` as PNG text chunks."""
    os.makedirs(folder, exist_ok=True)
    info = PngInfo()
    for key, value in (tags or {}).items():
        info.add_text(key, value)
    names = []
    for i, frame in enumerate(frames):
        name = f"frame_{i:05d}.png"
        Image.fromarray(frame).save(os.path.join(folder, name), format="PNG", pnginfo=info, compress_level=4)
        names.append(name)
    return names


# --- never overwrite, never leave a partial file ---------------------------------------------------


def save_new(directory: str, name_for: Callable[[int], str], counter: int,
             write: Callable[[str], None], is_folder: bool = False) -> str:
    """Write through `write(temp_path)` in `directory`, then move it to the first free `name_for(n)`.

    n starts at `counter`. Files are claimed with a hard link (fails if the name exists) so an existing
    output is never replaced; the temporary file or folder is removed whatever happens.
    """
    temp = os.path.join(directory, f".videograin-{uuid.uuid4().hex}.part")
    try:
        write(temp)
        while True:
            final = os.path.join(directory, name_for(counter))
            if not os.path.lexists(final):
                try:
                    _claim(temp, final, is_folder)
                    return final
                except FileExistsError:
                    pass
            counter += 1
    finally:
        _remove(temp)


def _claim(temp: str, final: str, is_folder: bool) -> None:
    if is_folder:
        os.mkdir(final)  # fails if the name was taken meanwhile; the rename then replaces this empty folder
        try:
            os.rename(temp, final)
        except OSError:
            os.rmdir(final)
            raise
        return
    try:
        os.link(temp, final)
    except FileExistsError:
        raise
    except OSError:  # file systems without hard links
        if os.path.lexists(final):
            raise FileExistsError(final)
        os.rename(temp, final)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        for name in os.listdir(path):
            os.remove(os.path.join(path, name))
        os.rmdir(path)
    elif os.path.lexists(path):
        os.remove(path)
