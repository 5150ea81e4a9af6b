"""OpenCV flow on in-memory frames (docs/design.md §10): known shifts, layout checks, colour preview."""
import math

import cv2
import numpy as np
import pytest
import torch

from videograin.motion.flow import FlowError, compute_flow, flow_to_rgb, validate_flow


def _texture(size: int = 192, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2.0)
    return (tex - tex.min()) / (tex.max() - tex.min())


def shifted_clip(dx: int, dy: int, frames: int = 3, side: int = 128, margin: int = 32) -> np.ndarray:
    """Frame t+1 is frame t moved by (dx, dy): frame_{t+1}(y + dy, x + dx) = frame_t(y, x)."""
    tex = _texture(side + 2 * margin)
    return np.stack([tex[margin - t * dy:margin - t * dy + side, margin - t * dx:margin - t * dx + side]
                     for t in range(frames)])


@pytest.mark.parametrize("method", ["dis", "farneback"])
@pytest.mark.parametrize("dx,dy", [(3, -2), (-1, 4), (0, 0)])
def test_known_shift_is_recovered_in_the_interior(method, dx, dy):
    clip = shifted_clip(dx, dy)
    flow = compute_flow(torch.from_numpy(clip), method=method)
    assert flow.shape == (2, 128, 128, 2) and flow.dtype == torch.float32
    interior = flow[:, 16:-16, 16:-16]
    assert torch.allclose(interior[..., 0].median(), torch.tensor(float(dx)), atol=0.05)  # channel 0 = x
    assert torch.allclose(interior[..., 1].median(), torch.tensor(float(dy)), atol=0.05)  # channel 1 = y
    assert (interior - torch.tensor([dx, dy], dtype=torch.float32)).abs().quantile(0.95) < 0.25


def test_uint8_and_float_frames_give_the_same_flow():
    clip = shifted_clip(2, 1)
    as_uint8 = (clip * 255 + 0.5).astype(np.uint8)
    assert torch.equal(compute_flow(clip), compute_flow(as_uint8))


def test_bad_frames_and_options_are_named():
    clip = shifted_clip(1, 1)
    with pytest.raises(FlowError, match="at least 2 frames"):
        compute_flow(clip[:1])
    with pytest.raises(FlowError, match=r"\[F, H, W, 3\]"):
        compute_flow(clip[..., 0])
    with pytest.raises(FlowError, match="unknown flow method"):
        compute_flow(clip, method="raft")
    with pytest.raises(FlowError, match="unknown DIS preset"):
        compute_flow(clip, preset="slow")


def test_validate_flow_accepts_the_layout_and_names_each_problem():
    good = torch.zeros(4, 8, 6, 2)
    assert validate_flow(good.double(), 5, 8, 6).dtype == torch.float32
    assert validate_flow(np.zeros((4, 8, 6, 2), np.float32), 5, 8, 6).shape == (4, 8, 6, 2)
    with pytest.raises(FlowError, match="4 frame pairs, but a 4-frame clip needs 3"):
        validate_flow(good, 4, 8, 6)
    with pytest.raises(FlowError, match="6x8 .*frames are 8x8"):
        validate_flow(good, 5, 8, 8)
    with pytest.raises(FlowError, match="channels-first"):
        validate_flow(good.permute(0, 3, 1, 2), 5, 8, 6)
    with pytest.raises(FlowError, match="layout"):
        validate_flow(torch.zeros(4, 8, 6), 5, 8, 6)
    with pytest.raises(FlowError, match="floating point"):
        validate_flow(good.long(), 5, 8, 6)
    with pytest.raises(FlowError, match="must be a tensor"):
        validate_flow([[0.0]], 5, 8, 6)
    bad = good.clone()
    bad[1, 2, 3, 0] = float("nan")
    with pytest.raises(FlowError, match="NaN"):
        validate_flow(bad, 5, 8, 6)


def test_flow_to_rgb_colours_direction_and_magnitude():
    directions = {  # angle in image coordinates (y down) -> expected RGB at full magnitude
        0.0: (1, 0, 0),              # right: red
        math.pi / 2: (0.5, 1, 0),    # down: chartreuse
        math.pi: (0, 1, 1),          # left: cyan
        -math.pi / 2: (0.5, 0, 1),   # up: violet
        math.pi / 3: (1, 1, 0),      # 60°: yellow
    }
    flow = torch.zeros(1, 2, len(directions), 2)
    for i, angle in enumerate(directions):
        flow[0, 0, i] = torch.tensor([math.cos(angle), math.sin(angle)]) * 4.0
        flow[0, 1, i] = torch.tensor([math.cos(angle), math.sin(angle)]) * 2.0  # half magnitude
    rgb = flow_to_rgb(flow, max_magnitude=4.0)
    assert rgb.shape == (1, 2, len(directions), 3)
    for i, expected in enumerate(directions.values()):
        assert torch.allclose(rgb[0, 0, i], torch.tensor(expected, dtype=torch.float32), atol=1e-5)
        assert torch.allclose(rgb[0, 1, i], rgb[0, 0, i] / 2, atol=1e-5)
    assert torch.equal(flow_to_rgb(torch.zeros(2, 3, 3, 2)), torch.zeros(2, 3, 3, 3))  # still = black


def test_flow_to_rgb_robust_scale_ignores_outliers():
    flow = torch.zeros(1, 10, 10, 2)
    flow[..., 0] = 1.0
    flow[0, 0, 0, 0] = 1000.0  # one outlier must not darken the rest
    rgb = flow_to_rgb(flow)
    assert torch.allclose(rgb[0, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    assert rgb.min() >= 0 and rgb.max() <= 1
