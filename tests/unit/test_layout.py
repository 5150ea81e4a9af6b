"""RegionLayout and build_layout against hand-computed values (docs/design.md §2, §5.2, §5.3, §9).

Fixture: 2 frames, latent 4×4 (pixels 32×32), two overlapping regions.
  A (k=0): frame 0 rows 0-1 × cols 0-1 (4 px); frame 1 rows 0-1 × all cols (8 px)
  B (k=1): frame 0 rows 1-2 × cols 1-2 (4 px, shares (1,1) with A); frame 1 empty
"""
import copy
import logging

import pytest
import torch

from videograin.masks.layout import LayoutError, RegionLayout, attention_sizes, build_layout
from videograin.binding.bits import token_bits

LAT_A = torch.zeros(2, 4, 4, dtype=torch.bool)
LAT_A[0, 0:2, 0:2] = True
LAT_A[1, 0:2, :] = True
LAT_B = torch.zeros(2, 4, 4, dtype=torch.bool)
LAT_B[0, 1:3, 1:3] = True


def to_pixels(lat: torch.Tensor, on: float = 1.0, off: float = 0.0) -> torch.Tensor:
    px = lat.repeat_interleave(8, 1).repeat_interleave(8, 2).float()
    return px * (on - off) + off


def make_layout(threshold: float = 0.5, feathered: bool = True, downsample: str = "nearest") -> RegionLayout:
    # B is "feathered" (0.4 background, 0.6 foreground): the threshold must separate it.
    # The hand-computed values below are the official `nearest` rule's (downsample tests: test_downsample.py).
    b = to_pixels(LAT_B, 0.6, 0.4) if feathered else to_pixels(LAT_B)
    return build_layout([to_pixels(LAT_A), b], ["A", "B"], ["iron man", "spider man"], ["instance", "part"],
                        (4, 4), threshold=threshold, token_bits=token_bits([(1, 2), (4, 2)]), downsample=downsample)


def test_build_thresholds_and_resizes_to_latent():
    lay = make_layout()
    assert lay.num_regions == 2 and lay.frames == 2 and lay.latent_size == (4, 4)
    assert lay.masks.dtype == torch.bool and lay.masks.shape == (2, 2, 4, 4)
    assert torch.equal(lay.masks[0], LAT_A) and torch.equal(lay.masks[1], LAT_B)
    assert lay.token_bits.tolist()[:7] == [0, 1, 1, 0, 2, 2, 0]
    # threshold 0 is the official "> 0": the feathered background of B then counts as foreground
    lay0 = make_layout(threshold=0.0)
    assert lay0.masks[1].all()


def test_build_nearest_picks_top_left_of_each_8x8_cell():
    # a pixel mask whose 8x8 cells are only partly set: PyTorch "nearest" samples pixel (8i, 8j)
    px = torch.zeros(1, 16, 16)
    px[0, 0, 0] = 1.0      # cell (0,0): sampled pixel set -> in
    px[0, 9:16, 9:16] = 1  # cell (1,1): 49 of 64 pixels but not (8,8) -> out
    px[0, 0, 8] = 1.0      # cell (0,1): sampled -> in
    lay = build_layout([px], ["r"], [""], ["instance"], (2, 2))
    assert lay.masks[0, 0].tolist() == [[True, True], [False, False]]


def test_masks_at_nearest_from_latent_masks():
    lay = make_layout()
    m2 = lay.masks_at(2, 2)
    assert m2.shape == (2, 2, 2, 2) and m2.dtype == torch.bool
    assert m2[0, 0].tolist() == [[True, False], [False, False]]
    assert m2[1, 0].tolist() == [[False, False], [False, True]]
    assert m2[0, 1].tolist() == [[True, True], [False, False]]
    assert not m2[1, 1].any()
    m1 = lay.masks_at(1, 1)
    assert m1.flatten().tolist() == [True, True, False, False]  # (A f0, A f1, B f0, B f1)
    # non-integer ratio: "nearest" takes source index floor(i·4/3) = 0, 1, 2 ("nearest-exact" would give 0, 2, 3)
    idx = torch.tensor([0, 1, 2])
    assert torch.equal(lay.masks_at(3, 3), lay.masks[:, :, idx][:, :, :, idx])
    assert lay.masks_at(2, 2) is m2  # cached
    assert torch.equal(lay.masks_at(4, 4), lay.masks)


def test_query_bits_frame_major():
    lay = make_layout()
    qb = lay.query_bits(4, 4)
    assert qb.dtype == torch.long and qb.shape == (2 * 16,)
    expected = torch.zeros(2, 4, 4, dtype=torch.long)
    expected[0, 0:2, 0:2] |= 1
    expected[1, 0:2, :] |= 1
    expected[0, 1:3, 1:3] |= 2
    assert torch.equal(qb, expected.flatten())
    assert qb[0 * 16 + 1 * 4 + 1] == 3          # overlap pixel (f0, y1, x1)
    assert qb[1 * 16 + 0 * 4 + 3] == 1          # (f1, y0, x3): frame-major index 19
    assert qb[0 * 16 + 0 * 4 + 3] == 0          # (f0, y0, x3) lies outside both
    assert lay.query_bits(2, 2).tolist() == [1, 0, 0, 2, 1, 1, 0, 0]


def test_cross_area_by_hand():
    lay = make_layout()
    a = lay.cross_area(4, 4).view(2, 4, 4)
    assert a.dtype == torch.float32
    expected = torch.ones(2, 4, 4)
    # frame 0: |A| = |B| = 4 of 16
    expected[0, 0:2, 0:2] = 1 - 4 / 16
    expected[0, 1:3, 1:3] = 1 - 4 / 16
    expected[0, 1, 1] = 1 - (4 + 4) / 16        # in both: terms add
    # frame 1: |A| = 8, B empty
    expected[1, 0:2, :] = 1 - 8 / 16
    assert torch.allclose(a, expected)
    # at 2x2: frame 0 |A| = |B| = 1 of 4; frame 1 |A| = 2 of 4
    assert torch.allclose(lay.cross_area(2, 2), torch.tensor([0.75, 1, 1, 0.75, 0.5, 0.5, 1, 1]))


def test_self_area_by_hand_uses_f_squared():
    lay = make_layout()
    a = lay.self_area(4, 4).view(2, 4, 4)
    # |A over frames| = 12, |B over frames| = 4, denominator F²·h·w = 4·16 = 64 (not F·h·w = 32)
    expected = torch.ones(2, 4, 4)
    expected[0, 0:2, 0:2] = 1 - 12 / 64
    expected[1, 0:2, :] = 1 - 12 / 64
    expected[0, 1:3, 1:3] = 1 - 4 / 64
    expected[0, 1, 1] = 1 - (12 + 4) / 64
    assert torch.allclose(a, expected)
    assert a.dtype == torch.float32
    # at 1x1: A = 2 tokens, B = 0; denominator 4·1
    assert torch.allclose(lay.self_area(1, 1), torch.tensor([0.5, 0.5]))


def test_union_is_float_blend_mask():
    lay = make_layout()
    u = lay.union()
    assert u.shape == (2, 1, 4, 4) and u.dtype == torch.float32
    assert torch.equal(u[:, 0].bool(), LAT_A | LAT_B)


def test_deepcopy_returns_same_object():
    lay = make_layout()
    opts = {"transformer_options": {"videograin": {"layout": lay}}}
    assert copy.deepcopy(lay) is lay
    assert copy.deepcopy(opts)["transformer_options"]["videograin"]["layout"] is lay


def test_to_moves_tensors_and_keeps_caches_per_device():
    lay = make_layout()
    cpu_bits = lay.query_bits(2, 2)
    assert lay.to("cpu") is lay
    moved = lay.to("meta")
    assert moved.masks.device.type == "meta" and moved.token_bits.device.type == "meta"
    assert moved.masks_at(2, 2).device.type == "meta"
    assert lay.query_bits(2, 2) is cpu_bits  # the cpu entry survives beside the meta one
    assert moved.names == lay.names and moved.prompts == lay.prompts and moved.kinds == lay.kinds


def test_empty_layout_is_a_global_edit():
    lay = build_layout([], [], [], [], (4, 6), frames=3)
    assert lay.num_regions == 0 and lay.frames == 3 and lay.latent_size == (4, 6)
    assert torch.equal(lay.union(), torch.ones(3, 1, 4, 6))  # blend with it is a no-op
    assert torch.equal(lay.query_bits(2, 3), torch.zeros(18, dtype=torch.long))
    assert torch.equal(lay.cross_area(2, 3), torch.ones(18)) and torch.equal(lay.self_area(2, 3), torch.ones(18))
    assert lay.masks_at(2, 3).shape == (0, 3, 2, 3)
    with pytest.raises(LayoutError):
        build_layout([], [], [], [], (4, 6))


def test_negative_area_warns(caplog):
    full = torch.ones(1, 16, 16)
    with caplog.at_level(logging.WARNING):
        lay = build_layout([full, full], ["a", "b"], ["", ""], ["instance", "part"], (2, 2))
    assert float(lay.cross_area(2, 2).min()) == pytest.approx(-1.0)
    assert any("negative" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_layout()
    assert not any("negative" in r.getMessage() for r in caplog.records)


def test_attention_sizes_halve_with_ceil():
    assert attention_sizes((64, 64)) == [(64, 64), (32, 32), (16, 16), (8, 8)]
    assert attention_sizes((12, 10)) == [(12, 10), (6, 5), (3, 3), (2, 2)]


@pytest.mark.parametrize("masks,latent,frames,message", [
    ([torch.ones(2, 32, 32), torch.ones(3, 32, 32)], (4, 4), None, "3 frames but the first mask has 2"),
    ([torch.ones(2, 32, 32)], (4, 4), 5, "2 frames but the latent has 5"),
    ([torch.ones(2, 32, 36)], (4, 4), None, "multiples of 8"),
    ([torch.ones(2, 32, 40)], (4, 4), None, "40x32 but the latent is 4x4"),
    ([torch.ones(32, 32)], (4, 4), None, "[F, H, W]"),
])
def test_build_rejects_bad_masks(masks, latent, frames, message):
    n = len(masks)
    with pytest.raises(LayoutError) as e:
        build_layout(masks, [f"r{i}" for i in range(n)], [""] * n, ["instance"] * n, latent, frames=frames)
    assert message in str(e.value)


def test_build_rejects_region_empty_in_every_frame():
    dot = torch.zeros(2, 32, 32)
    dot[:, 3, 3] = 1.0  # foreground at pixel size, nothing at the latent size
    with pytest.raises(LayoutError) as e:
        build_layout([torch.ones(2, 32, 32), dot], ["a", "b"], ["", ""], ["instance"] * 2, (4, 4))
    assert e.value.region == 1 and "empty in every frame" in str(e.value) and "2 mask pixels" in str(e.value)


def test_build_rejects_too_many_regions_and_bad_kind():
    m = [torch.ones(1, 8, 8)] * 64
    with pytest.raises(LayoutError, match="at most 63"):
        build_layout(m, ["r"] * 64, [""] * 64, ["instance"] * 64, (1, 1))
    build_layout(m[:63], ["r"] * 63, [""] * 63, ["instance"] * 63, (1, 1))  # 63 is fine
    with pytest.raises(LayoutError, match="kind"):
        build_layout(m[:1], ["r"], [""], ["person"], (1, 1))
