"""CLIP-T / CLIP-F on embedding tensors (motion/clip_scores.py): the definitions, ×100, and the errors."""
import math

import pytest
import torch

from videograin.motion.clip_scores import ClipScoreError, clip_frame_score, clip_text_score, cosine


def test_identical_frames_give_clip_f_100():
    e = torch.randn(1, 16, generator=torch.Generator().manual_seed(0)).repeat(5, 1)
    score = clip_frame_score(e * torch.tensor([[1.0], [2.0], [0.5], [3.0], [1.0]]))  # norms do not matter
    assert score.value == pytest.approx(100.0, abs=1e-9)
    assert len(score.per_frame) == 4 and score.scale == 100.0


def test_orthogonal_frames_give_zero_and_opposite_minus_100():
    assert clip_frame_score(torch.eye(3)).value == pytest.approx(0.0, abs=1e-12)
    assert clip_frame_score(torch.tensor([[1.0, 2.0], [-1.0, -2.0]])).value == pytest.approx(-100.0)


def test_known_small_vectors_by_hand():
    frames = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # pairs: cos(0°→45°) = 1/√2, cos(45°→90°) = 1/√2
    f = clip_frame_score(frames)
    assert f.per_frame == pytest.approx([100 / math.sqrt(2)] * 2)
    assert f.value == pytest.approx(100 / math.sqrt(2))
    # text along x: per frame cos = 1, 1/√2, 0
    t = clip_text_score(frames, torch.tensor([3.0, 0.0]))
    assert t.per_frame == pytest.approx([100.0, 100 / math.sqrt(2), 0.0])
    assert t.value == pytest.approx((100.0 + 100 / math.sqrt(2)) / 3)
    assert clip_text_score(frames, torch.tensor([[3.0, 0.0]]), scale=1.0).value == pytest.approx(t.value / 100)


def test_single_frame_clip_t_and_cosine():
    assert clip_text_score(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 0.0])).per_frame == \
        pytest.approx([100 / math.sqrt(2)])
    assert cosine(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, 0.0])).tolist() == [1.0, 0.0]


def test_float16_inputs_are_computed_in_float64():
    e = torch.randn(4, 768, generator=torch.Generator().manual_seed(1)).half()
    assert clip_frame_score(e.repeat(2, 1)[[0, 4]]).value == pytest.approx(100.0, abs=1e-9)


@pytest.mark.parametrize("call, words", [
    (lambda: clip_frame_score(torch.ones(1, 4)), "at least 2"),
    (lambda: clip_text_score(torch.ones(2, 4), torch.ones(3)), "different CLIP models"),
    (lambda: clip_text_score(torch.ones(2, 4), torch.ones(2, 4)), "one text embedding"),
    (lambda: clip_frame_score(torch.tensor([[1.0, 0.0], [0.0, 0.0]])), "all-zero"),
    (lambda: clip_frame_score(torch.tensor([[1.0, float("nan")], [1.0, 0.0]])), "non-finite"),
    (lambda: clip_frame_score(torch.ones(2, 3, 4)), "[count, dim]"),
])
def test_bad_embeddings_raise_clear_errors(call, words):
    with pytest.raises(ClipScoreError, match=None) as info:
        call()
    assert words in str(info.value)
    assert isinstance(info.value, ValueError)
