"""The one frame rule: a clip and its label masks keep the same frames for every skip/nth/cap, and a
label video shot with a display rotation lines up with its (equally rotated) clip.

Both sides go through the loaders' own code: the video loader keeps `FrameSelection.pick` over
`media.decode.iter_source_frames`; the mask loader reads label videos with `masks.load.read_label_frames`.
Each frame carries its index as the brightness of a block in the stored top-left corner.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from fractions import Fraction

import av
import numpy as np
import pytest

from videograin.masks.load import read_label_frames
from videograin.media.decode import iter_source_frames
from videograin.media.selection import FrameSelection

FRAMES, W, H, BLOCK, STEP = 12, 64, 32, 8, 16


def write(path, rotation: int = 0) -> str:
    """A clip whose stored top-left block has brightness 16·(i + 1) in frame i (lossless enough: crf 0)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(8))
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.options = {"crf": "0"}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(FRAMES):
            img = np.zeros((H, W, 3), np.uint8)
            img[:BLOCK, :BLOCK] = STEP * (i + 1)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return str(path)


def index_of(rgb: np.ndarray) -> int:
    """The frame index, read from whichever corner holds the bright block (rotation moves it)."""
    h, w = rgb.shape[:2]
    corners = [rgb[:BLOCK, :BLOCK], rgb[:BLOCK, w - BLOCK:], rgb[h - BLOCK:, :BLOCK], rgb[h - BLOCK:, w - BLOCK:]]
    level = max(float(c[2:-2, 2:-2].mean()) for c in corners)
    return round(level / STEP) - 1


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("rule")
    return {rot: (write(root / f"clip{rot}.mp4", rot), write(root / f"labels{rot}.mp4", rot)) for rot in (0, 90)}


@pytest.mark.parametrize("rotation", [0, 90])
def test_clip_and_label_video_select_the_same_frames(clips, rotation):
    clip, labels = clips[rotation]
    for skip, nth, cap in itertools.product((0, 1, 5), (1, 2, 3), (0, 1, 4, 7)):
        selection = FrameSelection(cap, skip, nth)
        video = [(i, frame.rgb()) for i, frame in selection.pick(iter_source_frames(clip))]
        masks, _ = read_label_frames(Path(labels), selection)
        expected = selection.indices(FRAMES)
        assert [i for i, _ in video] == expected == [index_of(rgb) for _, rgb in video]
        assert [index_of(rgb) for rgb in masks] == expected, (skip, nth, cap)
        assert selection.count(FRAMES) == len(expected)
        # Upright on both sides: the label frames have the clip's displayed shape and corner.
        assert all(m.shape == v.shape for m, (_, v) in zip(masks, video))
        if rotation:
            assert video[0][1].shape[:2] == (W, H)
