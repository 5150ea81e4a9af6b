"""Mask pictures: distinct colours, label image, tinted overlay with outlines."""
from __future__ import annotations

import torch

from videograin.masks.preview import label_image, outline, overlay, region_colours


def two_regions():
    a = torch.zeros(2, 32, 48)
    a[:, 4:20, 4:20] = 1
    b = torch.zeros(2, 32, 48)
    b[:, 10:30, 14:40] = 1  # overlaps a in rows 10..19, cols 14..19
    return {"a": a, "b": b}


def test_colours_are_distinct_and_saturated():
    c = region_colours(12)
    assert c.shape == (12, 3) and c.min() >= 0 and c.max() <= 1
    dist = torch.cdist(c, c) + torch.eye(12) * 10
    assert dist.min() > 0.15
    assert (c.max(1).values - c.min(1).values).min() > 0.5


def test_label_image_paints_each_region_and_averages_overlaps():
    m = two_regions()
    img = label_image(m)
    ca, cb = region_colours(2)
    assert img.shape == (2, 32, 48, 3)
    assert torch.allclose(img[0, 5, 5], ca) and torch.allclose(img[0, 25, 30], cb)
    assert torch.allclose(img[0, 15, 16], (ca + cb) / 2)
    assert img[0, 0, 47].abs().sum() == 0


def test_outline_is_the_inner_edge_only():
    m = torch.zeros(1, 20, 20)
    m[0, 5:15, 5:15] = 1
    line = outline(m, width=2)[0]
    assert line[5, 5:15].all() and line[6, 5:15].all() and not line[7, 7:13].any()
    assert not line[4].any() and not line[:, 4].any()
    full_left = torch.zeros(1, 20, 20)
    full_left[0, :, :10] = 1  # touches the frame border: no line along the border
    line = outline(full_left, width=1)[0]
    assert line[:, 9].all() and not line[5:15, 0].any()


def test_overlay_tints_inside_outlines_edges_and_leaves_outside():
    images = torch.full((2, 32, 48, 3), 0.5)
    m = two_regions()
    out = overlay(images, m, opacity=0.5)
    ca, cb = region_colours(2)
    assert torch.equal(out[:, 0, 47], images[:, 0, 47])  # outside every region
    assert torch.allclose(out[0, 8, 8], images[0, 8, 8] * 0.5 + ca * 0.5)  # inside a only
    assert torch.allclose(out[0, 4, 10], ca)  # a's edge
    assert torch.allclose(out[0, 29, 30], cb)  # b's edge
    plain = overlay(images, m, opacity=0.0)
    assert torch.equal(plain[0, 8, 8], images[0, 8, 8]) and torch.allclose(plain[0, 4, 10], ca)
