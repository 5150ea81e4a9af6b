"""The mask check: coverage numbers, text and plot, each warning on a crafted case and none on a clean
one, and the annotated overlay."""
from __future__ import annotations

import numpy as np
import torch

from videograin.masks.annotate import annotate_frames, annotated_overlay, interior_point
from videograin.masks.check import coverage_plot, coverage_table, coverage_text, frames_text, mask_warnings
from videograin.masks.preview import region_colours

F_, S = 4, 128          # frames, frame side; latent 16x16, attention 16, 8, 4, 2
LATENT = (S // 8, S // 8)


def box(x0: int, y0: int, x1: int, y1: int, frames=range(F_)) -> torch.Tensor:
    m = torch.zeros(F_, S, S)
    for f in frames:
        m[f, y0:y1, x0:x1] = 1
    return m


def clean() -> dict[str, torch.Tensor]:
    """Left half, right half, and a head inside the right half: no warning of any kind."""
    return {"left": box(0, 0, 64, 128), "right": box(64, 0, 128, 128), "head": box(64, 0, 96, 32)}


def test_coverage_numbers_by_hand():
    masks = {"a": box(0, 0, 64, 128), "b": box(0, 0, 32, 32, frames=[1])}
    cov = coverage_table(masks)
    assert cov.names == ["a", "b"]
    assert cov.share[0].tolist() == [0.5] * 4
    assert cov.share[1].tolist() == [0.0, 1 / 16, 0.0, 0.0]
    assert cov.uncovered.tolist() == [0.5] * 4
    text = coverage_text(cov).splitlines()
    assert text[0].split(" | ") == ["frame", "      a", "      b", "(no region)"]
    assert text[3].split(" | ") == ["    1", " 50.00%", "  6.25%", "     50.00%"]
    assert len(text) == 2 + F_


def test_coverage_plot_draws_each_region_in_its_colour():
    # Shares 50%, 37.5%, 6.25% and 12.5% in no region: four separate flat lines.
    cov = coverage_table({"left": box(0, 0, 64, 128), "right": box(64, 0, 128, 96), "head": box(64, 0, 96, 32)})
    img = coverage_plot(cov, 300, 500)
    assert img.shape == (1, 300, 500, 3) and img.dtype == torch.float32
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    pixels = (img[0] * 255).round().to(torch.int16).reshape(-1, 3)
    for rgb in region_colours(3):
        target = (rgb * 255).round().to(torch.int16)
        assert int(((pixels - target).abs().max(1).values <= 2).sum()) > 50   # a line, not a stray pixel
    # The flat 50% line of 'left' is horizontal: its colour spans the plot's width at one height.
    left = ((pixels - (region_colours(1)[0] * 255).round().to(torch.int16)).abs().max(1).values <= 2).reshape(300, 500)
    ys = torch.nonzero(left[:, 100:300].any(1)).flatten()
    assert len(ys) and int(ys.max() - ys.min()) <= 6


def test_frames_text_ranges():
    assert frames_text([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    assert frames_text([3]) == "3"


def test_clean_masks_give_no_warning():
    assert mask_warnings(clean(), LATENT) == []


def test_region_empty_in_some_frames_appearing_late():
    masks = clean()
    masks["head"] = box(64, 0, 96, 32, frames=[2, 3])
    warnings = mask_warnings(masks, LATENT)
    assert warnings == ["region 'head' is empty in 2 of 4 frames (0-1): its prompt binds to nothing there"]


def test_region_vanishing_mid_clip_and_gap():
    masks = clean()
    masks["head"] = box(64, 0, 96, 32, frames=[0, 1])
    w = mask_warnings(masks, LATENT)
    assert len(w) == 2 and "empty in 2 of 4 frames (2-3)" in w[0]
    assert w[1].startswith("region 'head' vanishes mid-clip: present from frame 0 but absent in frames 2-3")
    masks["head"] = box(64, 0, 96, 32, frames=[0, 2, 3])
    assert "absent in frames 1;" in mask_warnings(masks, LATENT)[1]
    masks["head"] = box(64, 0, 96, 32, frames=[])
    assert mask_warnings(masks, LATENT) == ["region 'head' is empty in every frame: it cannot be edited or "
                                            "separated; remove it or fix its mask"]


def test_overlap_that_is_not_part_inside_instance():
    masks = clean()
    masks["patch"] = box(48, 48, 80, 80, frames=[1, 2])          # straddles left and right
    w = mask_warnings(masks, LATENT)
    assert len(w) == 4                                           # empty frames, vanishes, two overlaps
    assert any(m.startswith("regions 'left' and 'patch' overlap in frames 1-2 (6.2% of 'left', 50.0% of 'patch')")
               for m in w)
    assert any(m.startswith("regions 'right' and 'patch' overlap in frames 1-2") for m in w)
    assert not any("'head' and" in m or "and 'head'" in m for m in w)   # head lies inside right: fine


def test_region_smaller_than_one_latent_cell_at_the_smallest_modulated_size():
    masks = clean()
    masks["dot"] = box(8, 8, 16, 16)                             # latent cell (1, 1); a 4x4 grid samples 0, 4, 8, 12
    w = mask_warnings(masks, LATENT, modulated_sizes=[(8, 8), (4, 4)], rule="nearest")
    assert len(w) == 1                                           # inside 'left': a nested overlap, no warning
    assert any(m.startswith("region 'dot' covers no token of the 4x4 attention grid in frames 0-3 (at most 64 pixels"
                            " there; one token samples one pixel per 32x32 px cell")
               for m in w)
    # The default rule, nearest_rescue, keeps the dot's best-covered cell: no warning.
    assert not any("covers no token" in m for m in mask_warnings(masks, LATENT, modulated_sizes=[(8, 8), (4, 4)]))
    masks["dot"] = box(0, 0, 40, 40)                             # latent 0..4: sampled at 4x4
    assert not any("covers no token" in m
                   for m in mask_warnings(masks, LATENT, modulated_sizes=[(8, 8), (4, 4)], rule="nearest"))
    masks["dot"] = box(8, 8, 16, 16)
    # The default sizes are every attention size but the latent's own: the smallest is 2x2 here.
    assert any("2x2 attention grid" in m for m in mask_warnings(masks, LATENT, rule="nearest"))


def test_pixels_in_no_region_with_background_lock():
    masks = {"left": box(0, 0, 64, 128), "right": box(64, 0, 128, 128, frames=[0, 1, 2])}
    masks["right"][3, :, 64:96] = 1                              # frame 3: a quarter uncovered
    w = mask_warnings(masks, LATENT, background_lock=True)
    assert w == ["6.2% of the pixels (up to 25.0% in frame 3) are in no region: with the background lock on they "
                 "are kept from the source video, not edited; give them a region (e.g. the complement of the "
                 "others) if they should change"]
    assert mask_warnings(masks, LATENT, background_lock=False) == []


def test_interior_point_sits_inside_a_ring():
    ring = np.zeros((21, 21), bool)
    yy, xx = np.mgrid[:21, :21]
    r = np.hypot(yy - 10, xx - 10)
    ring[(r >= 6) & (r <= 9)] = True
    x, y = interior_point(ring)
    assert ring[y, x]                                             # a centroid would land in the hole
    assert interior_point(np.zeros((4, 4), bool)) is None


def test_annotated_overlay_names_regions_only_where_present():
    images = torch.full((2, 96, 128, 3), 0.5)
    masks = {"cat": torch.zeros(2, 96, 128)}
    masks["cat"][0, 20:70, 30:100] = 1
    plain = annotate_frames(images, masks, names=False, frame_numbers=False)
    assert torch.equal(plain, images.float().mul(255).round().div(255))
    named = annotate_frames(images, masks, names=True, frame_numbers=False)
    assert not torch.equal(named[0], plain[0])                   # name drawn in frame 0
    assert torch.equal(named[1], plain[1])                       # region empty in frame 1: no name
    assert not torch.equal(named[0, 35:55], plain[0, 35:55])     # near the region's middle
    numbered = annotate_frames(images, masks, names=False, frame_numbers=True)
    assert not torch.equal(numbered[1, -20:], plain[1, -20:]) and torch.equal(numbered[1, :40], plain[1, :40])
    video = annotated_overlay(images, masks)
    assert video.shape == images.shape and float(video.max()) <= 1
