"""Any MASK batch as a region mask aligned with the frames: broadcast, sizing rule, threshold, refusals."""
from __future__ import annotations

import pytest
import torch

from videograin.masks.normalize import MaskShapeError, align_mask, alpha_to_mask


def error(*args, **kwargs) -> MaskShapeError:
    with pytest.raises(MaskShapeError) as info:
        align_mask(*args, **kwargs)
    return info.value


def test_frame_size_mask_is_used_as_is_and_thresholded():
    soft = torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(0))
    got = align_mask(soft, 3, 64, 48, "crop", threshold=0.3)
    assert got.dtype == torch.float32 and got.shape == (3, 64, 48)
    assert torch.equal(got, (soft > 0.3).float())


def test_single_frame_broadcasts_over_all_frames():
    m = torch.zeros(1, 8, 8)
    m[0, 2:5, 3:6] = 0.8
    got = align_mask(m, 5, 8, 8)
    assert got.shape == (5, 8, 8)
    assert all(torch.equal(got[f], (m[0] > 0.5).float()) for f in range(5))
    got[0, 0, 0] = 1  # a real tensor, not a view sharing memory across frames
    assert got[1, 0, 0] == 0
    assert torch.equal(align_mask(m[0], 5, 8, 8), align_mask(m, 5, 8, 8))  # [H, W] too


def test_source_size_mask_follows_keep_aspect():
    m = torch.zeros(2, 128, 128)
    m[:, 32:96, 32:64] = 1       # 2x2-aligned blocks: exact under any nearest sampling
    want = torch.zeros(2, 64, 64)
    want[:, 16:48, 16:32] = 1
    assert torch.equal(align_mask(m, 2, 64, 64, "keep_aspect"), want)


def test_source_size_mask_follows_crop_and_pad():
    m = (torch.rand(2, 64, 128, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    assert torch.equal(align_mask(m, 2, 64, 64, "crop"), m[:, :, 32:96])   # centre crop of the 2:1 source
    padded = align_mask(m, 2, 128, 128, "pad")                              # scale 1, 32 px bands above/below
    assert torch.equal(padded[:, 32:96], m) and not padded[:, :32].any() and not padded[:, 96:].any()


def test_wrong_frame_count_is_refused_with_fix():
    err = error(torch.ones(3, 8, 8), 5, 8, 8)
    assert err.input_name == "mask" and "3 frames but the video has 5" in err.problem
    assert "single mask" in err.fix


def test_empty_batch_and_bad_shapes_are_refused():
    assert "empty" in error(torch.zeros(0, 8, 8), 2, 8, 8).problem
    assert "[frames, height, width]" in error(torch.zeros(1, 8, 8, 3), 1, 8, 8).problem
    assert error(torch.zeros(1, 8, 8), 1, 8, 8, threshold=1.0).input_name == "threshold"
    assert error(torch.zeros(1, 8, 8), 1, 8, 8, size_mode="stretch").input_name == "size_mode"


def test_mask_of_another_framing_is_refused():
    # A tall 128x256 mask cannot be the source of square 256x256 keep_aspect frames.
    err = error(torch.ones(1, 256, 128), 1, 256, 256, "keep_aspect")
    assert err.input_name == "mask" and "128x256" in err.problem and "same video" in err.fix
    # With the video's own size known, crop checks the aspect ratio too.
    err = error(torch.ones(1, 100, 100), 1, 64, 64, "crop", source_size=(128, 64))
    assert "aspect" in err.problem
    assert align_mask(torch.ones(1, 64, 128), 1, 64, 64, "crop", source_size=(256, 128)).shape == (1, 64, 64)


def test_alpha_channel_to_mask():
    img = torch.rand(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(alpha_to_mask(img), img[..., 3])
    assert torch.allclose(alpha_to_mask(img, invert=True), 1 - img[..., 3])
    with pytest.raises(MaskShapeError, match="alpha"):
        alpha_to_mask(img[..., :3])
