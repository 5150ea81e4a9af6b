"""Mask downsampling to the attention sizes (masks/downsample.py) and the region check (masks/check.py).

Main fixture, the thin-part case of docs/design.md §19: frames of 256×128 pixels (latent 16×32, attention sizes 8×16, 4×8,
2×4 as [h, w]); an instance box and a one-latent-row "sunglasses" part inside it on an odd row,
which the official nearest resize drops at every modulated level.
"""
import logging

import pytest
import torch
import torch.nn.functional as F

from videograin.binding.bits import token_bits
from videograin.masks.check import modulated_sizes, region_cells, region_report
from videograin.masks.downsample import AREA_FRACTION, RULES, coverage, downsample
from videograin.masks.layout import RegionLayout, attention_sizes, build_layout

FRAMES, LAT = 4, (16, 32)


def to_pixels(lat: torch.Tensor) -> torch.Tensor:
    return lat.repeat_interleave(8, -2).repeat_interleave(8, -1).float()


def part_layout(rule: str) -> RegionLayout:
    person = torch.zeros(FRAMES, *LAT, dtype=torch.bool)
    person[:, 2:14, 8:20] = True
    glasses = torch.zeros(FRAMES, *LAT, dtype=torch.bool)
    glasses[:3, 5, 11:17] = True  # one latent row (odd), absent in the last frame
    return build_layout([to_pixels(person), to_pixels(glasses)], ["1: man", "2: sunglasses"], ["man", "sunglasses"],
                        ["instance", "part"], LAT, token_bits=token_bits([(2, 1), (4, 1)]), downsample=rule)


def blob_layout(rule: str) -> RegionLayout:
    """Three overlapping regions that stay large at every attention size."""
    yy, xx = torch.meshgrid(torch.arange(LAT[0]), torch.arange(LAT[1]), indexing="ij")
    masks = []
    for cy, cx, r in ((8, 7, 6.5), (8, 24, 7.5), (7, 15, 5.5)):  # moving discs, overlapping
        frames = [((yy - cy - f % 2) ** 2 + (xx - cx - 2 * f) ** 2 < r * r) for f in range(FRAMES)]
        masks.append(to_pixels(torch.stack(frames)))
    return build_layout(masks, ["a", "b", "c"], ["", "", ""], ["instance", "instance", "part"], LAT,
                        downsample=rule)


def test_attention_sizes_of_the_issue_case():
    assert attention_sizes(LAT) == [(16, 32), (8, 16), (4, 8), (2, 4)]


@pytest.mark.parametrize("rule", ["nearest_rescue", "area"])
def test_thin_part_keeps_a_cell_at_every_modulated_level_except_under_nearest(rule):
    kept, dropped = part_layout(rule), part_layout("nearest")
    for h, w in modulated_sizes(kept):
        part = kept.masks_at(h, w)[1]
        assert part[:3].flatten(1).any(1).all(), (rule, h, w)   # every frame where it is present
        assert not part[3].any()                                 # and none where it is absent
        assert not dropped.masks_at(h, w)[1].any(), (h, w)       # nearest: no cell at all
    # 8×16: the part is latent row 5, columns 11-16; cells (2, 6) and (2, 7) hold 2 of their 4 pixels, the most
    assert kept.masks_at(8, 16)[1, 0].nonzero().tolist() == [[2, 6], [2, 7]]
    # the instance is untouched by the rescue of the part (it kept cells under nearest)
    if rule == "nearest_rescue":
        for h, w in modulated_sizes(kept):
            assert torch.equal(kept.masks_at(h, w)[0], dropped.masks_at(h, w)[0])


def test_rescue_is_exactly_nearest_for_regions_large_at_every_level():
    near, rescue = blob_layout("nearest"), blob_layout("nearest_rescue")
    for h, w in attention_sizes(LAT):
        assert near.masks_at(h, w).flatten(2).any(2).all()  # the fixture: nearest keeps them everywhere
        assert torch.equal(near.masks_at(h, w), rescue.masks_at(h, w)), (h, w)
        assert torch.equal(near.query_bits(h, w), rescue.query_bits(h, w))
        assert torch.equal(near.cross_area(h, w), rescue.cross_area(h, w))
        assert torch.equal(near.self_area(h, w), rescue.self_area(h, w))


def test_area_rule_differs_from_nearest_on_boundaries():
    # Why `area` is not the default: it keeps every region but moves large regions' boundaries.
    near, area = blob_layout("nearest"), blob_layout("area")
    assert any(not torch.equal(near.masks_at(h, w), area.masks_at(h, w)) for h, w in modulated_sizes(near))
    cover = coverage(area.masks, (8, 16))
    assert torch.equal(area.masks_at(8, 16), cover >= AREA_FRACTION)  # no rescue needed for the blobs


def test_area_terms_follow_the_rule():
    kept, dropped = part_layout("nearest_rescue"), part_layout("nearest")
    h, w = 8, 16
    for lay in (kept, dropped):
        m = lay.masks_at(h, w).float()
        cross = 1 - (m * m.sum((2, 3), keepdim=True)).sum(0) / (h * w)
        self_ = 1 - (m * m.sum((1, 2, 3), keepdim=True)).sum(0) / (FRAMES ** 2 * h * w)
        assert torch.allclose(lay.cross_area(h, w), cross.flatten())
        assert torch.allclose(lay.self_area(h, w), self_.flatten())
        assert torch.equal(lay.query_bits(h, w) & 2 != 0, lay.masks_at(h, w)[1].flatten())
    # frame 0, rescued cell (2, 6): in the person (|R| = 6·6 = 36 cells at 8×16) and the part (2 cells)
    cell = 0 * h * w + 2 * w + 6
    assert kept.cross_area(h, w)[cell] == pytest.approx(1 - (36 + 2) / (h * w))
    assert dropped.cross_area(h, w)[cell] == pytest.approx(1 - 36 / (h * w))
    assert kept.query_bits(h, w)[cell] == 3 and dropped.query_bits(h, w)[cell] == 1


@pytest.mark.parametrize("latent", [(16, 32), (13, 10), (7, 9)])
def test_coverage_is_ceil_mode_average_pooling_at_the_unet_sizes(latent):
    g = torch.Generator().manual_seed(sum(latent))
    masks = torch.rand(2, 3, *latent, generator=g) > 0.6
    for level, (h, w) in enumerate(attention_sizes(latent)):
        s = 2 ** level
        # padding 0 + ceil_mode: the last, partial window divides by its in-bounds pixels only
        pooled = F.avg_pool2d(masks.float(), s, s, ceil_mode=True)
        assert pooled.shape[-2:] == (h, w)
        torch.testing.assert_close(coverage(masks, (h, w)), pooled)


def test_coverage_at_other_sizes_is_adaptive_pooling():
    masks = torch.rand(1, 2, 12, 10, generator=torch.Generator().manual_seed(1)) > 0.5
    torch.testing.assert_close(coverage(masks, (5, 3)), F.adaptive_avg_pool2d(masks.float(), (5, 3)))


def test_odd_latent_last_row_is_rescued_with_its_partial_cell():
    # latent 13×10 → 7×5: nearest samples rows 0,1,3,5,7,9,11, so a region on row 12 only is lost;
    # its cell row 6 holds one latent row (ceil mode), fully covered.
    masks = torch.zeros(1, 1, 13, 10, dtype=torch.bool)
    masks[0, 0, 12, :] = True
    assert not downsample(masks, (7, 5), "nearest").any()
    rescued = downsample(masks, (7, 5), "nearest_rescue")
    assert rescued[0, 0].nonzero().tolist() == [[6, j] for j in range(5)]
    assert torch.equal(downsample(masks, (7, 5), "area"), rescued)


def test_rescue_keeps_every_region_in_every_present_frame_on_random_masks():
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 5, 13, 18, generator=g) > 0.985  # sparse specks: nearest loses many
    present = masks.any((2, 3))
    for rule in ("nearest_rescue", "area"):
        for size in attention_sizes((13, 18))[1:]:
            out = downsample(masks, size, rule)
            assert torch.equal(out.any((2, 3)), present), (rule, size)
    lost = sum(int((present & ~downsample(masks, s, "nearest").any((2, 3))).sum())
               for s in attention_sizes((13, 18))[1:])
    assert lost > 0  # the fixture does exercise the rescue


def test_rules_are_checked():
    assert RULES == ("nearest_rescue", "nearest", "area")
    with pytest.raises(ValueError, match="unknown downsampling rule"):
        downsample(torch.zeros(1, 1, 4, 4, dtype=torch.bool), (2, 2), "bilinear")
    with pytest.raises(ValueError, match="unknown downsampling rule"):
        part_layout("bilinear")
    assert part_layout("nearest").downsample == "nearest"
    assert part_layout("area").to("meta").downsample == "area"
    assert "downsample area" in repr(part_layout("area"))


def test_build_layout_default_is_nearest_rescue():
    lay = build_layout([torch.ones(1, 16, 16)], ["a"], [""], ["instance"], (2, 2))
    assert lay.downsample == "nearest_rescue"


def test_region_check_counts_cells_and_warns_only_under_nearest():
    dropped, kept = part_layout("nearest"), part_layout("nearest_rescue")
    cells = region_cells(dropped)
    assert [lc.cells for lc in cells[1]] == [3 * 6, 0, 0, 0]
    assert all(lc.lost_frames == (0, 1, 2) for lc in cells[1][1:])
    assert [lc.cells for lc in cells[0]] == [4 * 144, 4 * 36, 4 * 9, 4 * 2]
    lines, warnings = region_report(dropped)
    assert len(warnings) == 3  # one per modulated level, for the part only
    assert all("2: sunglasses (part)" in w and "nearest_rescue" in w for w in warnings)
    assert "16x8" in warnings[0] and "3 of 4 frames (0, 1, 2)" in warnings[0]
    assert lines[1].startswith("region 2: sunglasses (part): cells over 4 frames: 18 at 32x16, 0 at 16x8")

    lines, warnings = region_report(kept)
    assert warnings == []
    assert [lc.cells for lc in region_cells(kept)[1]][1:] == [6, 3, 3]  # 2, 1, 1 cells in each of 3 frames
    assert any("nearest would leave it no cell in 3 of 4 frames" in line for line in lines)
    assert all(lc.rescued_frames == (0, 1, 2) for lc in region_cells(kept)[1][1:])
    assert all(lc.rescued_frames == () for lc in region_cells(kept)[0])


def test_region_check_warns_nothing_for_large_regions(caplog):
    with caplog.at_level(logging.WARNING):
        lines, warnings = region_report(blob_layout("nearest"))
    assert warnings == [] and len(lines) == 3
