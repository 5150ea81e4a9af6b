"""Boxes with keyframes: interpolation worked out by hand, units, the pixel-centre rule, errors."""
from __future__ import annotations

import json

import pytest
import torch

from videograin.masks.boxes import BoxesError, boxes_to_masks, interpolate, parse_boxes
from videograin.masks.geometry import plan_frames


def rect(frames: int, h: int, w: int, boxes: dict[int, tuple[int, int, int, int]]) -> torch.Tensor:
    m = torch.zeros(frames, h, w)
    for f, (x0, y0, x1, y1) in boxes.items():
        m[f, y0:y1, x0:x1] = 1
    return m


def test_keyframes_interpolate_linearly_by_hand():
    text = json.dumps({"a": {"0": [0, 0, 4, 4], "4": [8, 2, 12, 6]}})
    got = boxes_to_masks(text, 5, 10, 16)["a"]
    # frame f: x0 = 2f, y0 = f/2 -> frame 1 y0 = 0.5: pixel row 0 (centre 0.5) is in, y1 = 4.5: rows 0..3
    want = rect(5, 10, 16, {0: (0, 0, 4, 4), 1: (2, 0, 6, 4), 2: (4, 1, 8, 5), 3: (6, 1, 10, 5), 4: (8, 2, 12, 6)})
    assert torch.equal(got, want)


def test_pixel_centre_rule_on_fractional_edges():
    got = boxes_to_masks('{"a": [0.75, 0, 4.75, 2], "units": "pixels"}', 1, 2, 8)["a"]
    assert got[0, 0].tolist() == [0, 1, 1, 1, 1, 0, 0, 0]   # centres 1.5..4.5 lie in [0.75, 4.75)


def test_hold_before_first_and_after_last_keyframe():
    b = interpolate({1: [0.0, 0.0, 2.0, 2.0], 3: [4.0, 0.0, 6.0, 2.0]}, 5)
    assert b.tolist() == [[0, 0, 2, 2], [0, 0, 2, 2], [2, 0, 4, 2], [4, 0, 6, 2], [4, 0, 6, 2]]
    assert interpolate({2: [1.0, 1.0, 3.0, 3.0]}, 3).tolist() == [[1, 1, 3, 3]] * 3


def test_units_rule_and_region_order():
    masks = boxes_to_masks('{"zeta": [0, 0, 0.5, 0.5], "alpha": {"0": [0.5, 0.5, 1, 1]}}', 2, 8, 8)
    assert list(masks) == ["zeta", "alpha"]                       # JSON order, not sorted
    assert torch.equal(masks["zeta"], rect(2, 8, 8, {0: (0, 0, 4, 4), 1: (0, 0, 4, 4)}))
    assert torch.equal(masks["alpha"], rect(2, 8, 8, {0: (4, 4, 8, 8), 1: (4, 4, 8, 8)}))
    px = boxes_to_masks('{"units": "pixels", "dot": [0, 0, 1, 1]}', 1, 4, 4)["dot"]
    assert px.sum() == 1 and px[0, 0, 0] == 1                       # explicit pixels beat the ≤ 1 rule
    assert parse_boxes('{"a": [0, 0, 2, 1]}', 1)[1] == "pixels"
    clipped = boxes_to_masks('{"a": [-4, -4, 2, 100]}', 1, 4, 4)["a"]   # past the frame: cut off
    assert torch.equal(clipped, rect(1, 4, 4, {0: (0, 0, 2, 4)}))


def test_boxes_in_source_pixels_follow_the_frame_plan():
    plan = plan_frames(128, 64, "crop", 64, 64)     # scale 1, centre crop 32 px on each side
    got = boxes_to_masks('{"a": [40, 0, 60, 10]}', 1, 64, 64, plan=plan)["a"]
    assert torch.equal(got, rect(1, 64, 64, {0: (8, 0, 28, 10)}))
    half = boxes_to_masks('{"a": [0.5, 0, 1, 1]}', 1, 64, 64, plan=plan)["a"]   # right half of the source
    assert torch.equal(half, rect(1, 64, 64, {0: (32, 0, 64, 64)}))


@pytest.mark.parametrize("text, problem", [
    ('{"a": [0, 0, 4, 4]', "not valid JSON"),
    ('[1, 2]', "not an object"),
    ('{}', "names no region"),
    ('{"a": {"5": [0, 0, 4, 4]}}', "frame 5, but the video has frames 0 to 4"),
    ('{"a": {"-1": [0, 0, 4, 4]}}', "frame -1"),
    ('{"a": {"x": [0, 0, 4, 4]}}', "not a frame number"),
    ('{"a": {"0": [4, 0, 4, 4]}}', "x1 <= x0"),
    ('{"a": {"0": [0, 5, 4, 4]}}', "y1 <= y0"),
    ('{"a": {"0": [0, 0, 4]}}', "not four numbers"),
    ('{"a": {"0": [0, 0, "4", 4]}}', "not four numbers"),
    ('{"a": {"0": [0, 0, true, 4]}}', "not four numbers"),
    ('{"a": 3}', "not keyframes or one box"),
    ('{"a": [0, 0, 4, 4], "a": [0, 0, 2, 2]}', "appears twice"),
    ('{"units": "inches", "a": [0, 0, 4, 4]}', '"units" is "inches"'),
    ('{"units": "fraction", "a": [0, 0, 4, 4]}', "outside 0..1"),
])
def test_malformed_boxes_name_the_problem_and_a_fix(text, problem):
    with pytest.raises(BoxesError) as info:
        boxes_to_masks(text, 5, 16, 16)
    assert problem in info.value.problem and info.value.fix and info.value.input_name == "boxes"
    assert str(info.value).startswith("input 'boxes': ")
