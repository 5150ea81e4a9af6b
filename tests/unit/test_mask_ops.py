"""Mask operations against small hand-made arrays with exact expected outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from videograin.masks import ops


def t(rows: list[str] | list[list[str]]) -> torch.Tensor:
    """Frames drawn as strings: '#' = 1, '.' = 0; one list of rows per frame (or one frame)."""
    frames = rows if isinstance(rows[0], list) else [rows]
    return torch.tensor([[[c == "#" for c in r] for r in fr] for fr in frames], dtype=torch.float32)


def test_grow_disk_is_euclidean_disk():
    m = t([".......", ".......", ".......", "...#...", ".......", ".......", "......."])
    want = t([".......", "...#...", "..###..", ".#####.", "..###..", "...#...", "......."])
    assert torch.equal(ops.grow(m, 2, "disk"), want)


def test_grow_disk_radius_3_rows():
    m = torch.zeros(1, 9, 9)
    m[0, 4, 4] = 1
    got = ops.grow(m, 3, "disk")[0]
    # isqrt(9 - dy²) for dy = 0..3: 3, 2, 2, 0 -> row widths 7, 5, 5, 1
    assert got.sum(1).tolist() == [0, 1, 5, 5, 7, 5, 5, 1, 0]
    assert torch.equal(got, got.flip(0)) and torch.equal(got, got.T)


def test_grow_square_and_soft_values():
    m = torch.zeros(1, 5, 5)
    m[0, 2, 2] = 0.5
    got = ops.grow(m, 1, "square")
    want = torch.zeros(1, 5, 5)
    want[0, 1:4, 1:4] = 0.5
    assert torch.equal(got, want)
    assert torch.equal(ops.grow(m, 0), m)


def test_grow_at_border_does_not_wrap():
    m = t(["#....", ".....", "....."])
    assert torch.equal(ops.grow(m, 1, "square"), t(["##...", "##...", "....."]))


def test_shrink_disk_vs_square_on_plus():
    plus = t([".....", "..#..", ".###.", "..#..", "....."])
    centre = t([".....", ".....", "..#..", ".....", "....."])
    assert torch.equal(ops.shrink(plus, 1, "disk"), centre)       # the radius-1 disk is the plus itself
    assert torch.equal(ops.shrink(plus, 1, "square"), torch.zeros_like(plus))


def test_shrink_block_and_border_is_not_background():
    block = torch.zeros(1, 7, 7)
    block[0, 1:6, 1:6] = 1
    want = torch.zeros(1, 7, 7)
    want[0, 2:5, 2:5] = 1
    assert torch.equal(ops.shrink(block, 1, "square"), want)
    corner = torch.zeros(1, 6, 6)
    corner[0, 0:3, 0:3] = 1
    want = torch.zeros(1, 6, 6)
    want[0, 0:2, 0:2] = 1
    assert torch.equal(ops.shrink(corner, 1, "square"), want)


def test_grow_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        ops.grow(torch.zeros(1, 3, 3), 1, "diamond")
    with pytest.raises(ValueError, match=">= 0"):
        ops.shrink(torch.zeros(1, 3, 3), -1)
    with pytest.raises(ValueError, match="frames, height, width"):
        ops.grow(torch.zeros(3, 3), 1)


def test_feather_matches_hand_computed_gaussian_step():
    m = torch.zeros(2, 4, 12)
    m[:, :, 6:] = 1
    got = ops.feather(m, 3)
    k = np.exp(-0.5 * (np.arange(-3, 4) / 1.0) ** 2)   # σ = radius / 3 = 1
    k /= k.sum()
    step = np.r_[np.zeros(6), np.ones(6)]
    want = [sum(k[i + 3] * step[min(max(x + i, 0), 11)] for i in range(-3, 4)) for x in range(12)]
    assert np.allclose(got[0, 0].numpy(), want, atol=1e-6)
    assert torch.allclose(got, got[:1, :1].expand_as(got))       # constant down the columns, same per frame
    assert got[0, 0, 5] + got[0, 0, 6] == pytest.approx(1.0, abs=1e-6)  # symmetric ramp
    assert got[0, 0, 0] == 0 and got[0, 0, -1] == pytest.approx(1.0)
    assert torch.equal(ops.feather(m, 0), m)


def test_fill_holes_closed_ring_and_diagonal_outline():
    ring = t(["#####", "#...#", "#...#", "#####"])
    assert torch.equal(ops.fill_holes(ring), torch.ones(1, 4, 5))
    diamond = t([".....", "..#..", ".#.#.", "..#..", "....."])
    assert torch.equal(ops.fill_holes(diamond), t([".....", "..#..", ".###.", "..#..", "....."]))


def test_fill_holes_open_to_border_and_max_area():
    cup = t(["#...#", "#...#", "#####"])             # its inside touches the top border
    assert torch.equal(ops.fill_holes(cup), cup)
    two = t(["#######", "#.##..#", "####..#", "#######"])  # holes of 1 and 4 pixels
    assert torch.equal(ops.fill_holes(two, max_area=1), t(["#######", "####..#", "####..#", "#######"]))
    assert torch.equal(ops.fill_holes(two), torch.ones(1, 4, 7))


def test_remove_specks_by_area_with_8_connectivity():
    m = t(["#.....", "......", "..#...", "...#..", "....##", "....##"])
    # pieces: 1 px at (0,0); the diagonal (2,2)-(3,3)-(4,4) block: 8-connected with the 2x2 -> 6 px
    assert torch.equal(ops.remove_specks(m, 2), t(["......", "......", "..#...", "...#..", "....##", "....##"]))
    assert torch.equal(ops.remove_specks(m, 7), torch.zeros_like(m))
    assert torch.equal(ops.remove_specks(m, 0), m)


def test_temporal_median_binary_majority_and_soft():
    series = torch.tensor([1, 0, 1, 1, 0], dtype=torch.float32).view(5, 1, 1)
    assert ops.temporal_median(series, 3).flatten().tolist() == [1, 1, 1, 1, 0]
    soft = torch.tensor([0.1, 0.9, 0.5], dtype=torch.float32).view(3, 1, 1)
    assert torch.allclose(ops.temporal_median(soft, 3).flatten(), torch.tensor([0.1, 0.5, 0.5]))
    assert torch.equal(ops.temporal_median(series, 1), series)
    with pytest.raises(ValueError, match="odd"):
        ops.temporal_median(series, 4)


def test_set_operations_and_complement():
    a = t(["##..", "##.."])
    b = t([".##.", ".##."])
    assert torch.equal(ops.union(a, b), t(["###.", "###."]))
    assert torch.equal(ops.intersection(a, b), t([".#..", ".#.."]))
    assert torch.equal(ops.difference(a, b), t(["#...", "#..."]))
    assert torch.equal(ops.complement([a, b]), t(["...#", "...#"]))
    two = torch.cat([a, b])                          # a one-frame mask broadcasts over frames
    assert torch.equal(ops.union(two, t(["...#", "...."])), t([["##.#", "##.."], [".###", ".##."]]))
    with pytest.raises(ValueError, match="do not match"):
        ops.union(a, torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match="at least one"):
        ops.complement([])
