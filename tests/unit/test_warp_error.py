"""Warp-Err (docs/design.md §10): static and exactly-warped clips score 0, changes score > 0."""
import math

import cv2
import numpy as np
import pytest
import torch

from videograin.motion.flow import FlowError
from videograin.motion.warp_error import source_flows, warp_error


def texture(side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((side, side, 3)).astype(np.float32), (0, 0), 2.0)
    return (tex - tex.min()) / (tex.max() - tex.min())


def shifted(dx: int, dy: int, frames: int = 4, side: int = 96, margin: int = 24) -> np.ndarray:
    tex = texture(side + 2 * margin)
    return np.stack([tex[margin - t * dy:margin - t * dy + side, margin - t * dx:margin - t * dx + side]
                     for t in range(frames)])


def test_static_clip_scores_zero():
    clip = np.repeat(texture(64)[None], 5, axis=0)
    flow, back = source_flows(clip)
    for backward in (None, back):
        result = warp_error(torch.from_numpy(clip), flow, backward)
        assert result.value == 0.0 and result.per_frame == [0.0] * 4 and result.pixels == [64 * 64] * 4


@pytest.mark.parametrize("error", ["squared", "absolute"])
def test_known_integer_shift_with_the_true_flow_scores_zero(error):
    dx, dy, frames = 3, -2, 4
    clip = shifted(dx, dy, frames)
    true_flow = torch.tensor([float(dx), float(dy)]).expand(frames - 1, 96, 96, 2)
    result = warp_error(clip, true_flow, error=error)
    assert result.value < 1e-4
    assert result.pixels == [(96 - dx) * (96 - abs(dy))] * (frames - 1)  # only points that stay in frame


def test_known_shift_with_opencv_flow_is_near_zero_and_uint8_agrees():
    clip = shifted(2, 1)
    flow, back = source_flows(clip)
    result = warp_error(clip, flow, back)
    assert result.value < 0.5  # ×1e-3 MSE of 0..1 values, i.e. RMS < 0.6/255
    as_uint8 = (clip * 255 + 0.5).astype(np.uint8)
    assert abs(warp_error(as_uint8, flow, back).value - result.value) < 0.05


def test_changes_score_above_zero_and_scale_and_error_kind_apply():
    clip = shifted(2, 1)
    flow, back = source_flows(clip)
    flicker = clip.copy()
    flicker[1::2] = np.clip(flicker[1::2] + 0.1, 0, 1)  # every other frame brighter: flicker
    sq = warp_error(flicker, flow, back)
    ab = warp_error(flicker, flow, back, error="absolute", scale=1.0)
    assert sq.value > 5.0  # about 0.1² · 1000 = 10
    assert 0.05 < ab.value < 0.11
    assert math.isclose(warp_error(flicker, flow, back, scale=1.0).value * 1000, sq.value, rel_tol=1e-6)


def test_region_mask_selects_inside_or_outside():
    clip = np.repeat(texture(64)[None], 3, axis=0)
    edit = clip.copy()
    edit[1:, :, :32] = 1 - edit[1:, :, :32]  # the left half changes after frame 0
    mask = torch.zeros(3, 64, 64)
    mask[:, :, :32] = 1
    flow = torch.zeros(2, 64, 64, 2)
    inside = warp_error(edit, flow, mask=mask, region="inside")
    outside = warp_error(edit, flow, mask=mask, region="outside")
    assert inside.per_frame[0] > 10 and inside.per_frame[1] == 0.0 and outside.value == 0.0
    assert inside.pixels == [64 * 32] * 2
    with pytest.raises(FlowError, match="needs a mask"):
        warp_error(edit, flow, region="inside")


def test_occluded_pixels_are_not_counted():
    """The right half slides 4 px left over the left half: columns 28..31 of frame t are hidden in t+1,
    and the forward-backward test drops exactly them."""
    side = 64
    forward = torch.zeros(1, side, side, 2)
    forward[0, :, 32:, 0] = -4.0               # right half moves left
    backward = torch.zeros(1, side, side, 2)
    backward[0, :, 28:, 0] = 4.0               # frame t+1's x >= 28 shows the right half
    clip = np.repeat(texture(side)[None], 2, axis=0)
    with_check = warp_error(clip, forward, backward)
    without = warp_error(clip, forward)
    assert without.pixels == [side * side] and with_check.pixels == [side * side - 4 * side]


def test_bad_inputs_are_named():
    clip = np.zeros((3, 8, 8, 3), np.float32)
    with pytest.raises(FlowError, match="3-frame clip needs 2"):
        warp_error(clip, torch.zeros(3, 8, 8, 2))
    with pytest.raises(FlowError, match="unknown error"):
        warp_error(clip, torch.zeros(2, 8, 8, 2), error="l3")
    with pytest.raises(FlowError, match=r"\[F, H, W, 3\]"):
        warp_error(clip[:1], torch.zeros(0, 8, 8, 2))
