"""Region mask loading: folder and label layouts, frame selection, alignment with the frames, errors."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from videograin.masks.geometry import apply_plan, plan_frames
from videograin.masks.layout import build_layout
from videograin.masks.load import MaskLoadError, discover_colours, load_region_masks, plan_masks
from videograin.media.files import natural_key
from videograin.media.selection import FrameSelection, SelectionError


def rect(w: int, h: int, x0: int, y0: int, x1: int, y1: int, value: int = 255) -> np.ndarray:
    a = np.zeros((h, w), dtype=np.uint8)
    a[y0:y1, x0:x1] = value
    return a


def write_region(root: Path, name: str, frames: list[np.ndarray], names: list[str] | None = None) -> None:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(frames):
        Image.fromarray(a).save(d / (names[i] if names else f"{i:05d}.png"))


def load(path, frames=4, w=64, h=64, mode="keep_aspect", sel=FrameSelection(), threshold=0.5, source=None):
    return load_region_masks(path, frames, w, h, mode, sel, threshold, source)


def error(fn, *args, **kwargs) -> MaskLoadError:
    with pytest.raises(MaskLoadError) as info:
        fn(*args, **kwargs)
    return info.value


# --- layout (a): one subfolder per region -------------------------------------------------------

def test_region_folders_natural_order_and_names(tmp_path):
    # Frame i has its rectangle at x = 4*i: frame order is readable from the mask itself.
    names = ["f1.png", "f2.png", "f10.png", "f3.png"]  # written out of order, "f10" sorts last
    order = sorted(names, key=natural_key)
    assert order == ["f1.png", "f2.png", "f3.png", "f10.png"]
    frames = [rect(64, 64, 4 * order.index(n), 0, 4 * order.index(n) + 4, 64) for n in names]
    write_region(tmp_path, "region10", frames, names)
    write_region(tmp_path, "region2", [rect(64, 64, 40, 40, 60, 60)] * 4)
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(rect(64, 64, 0, 0, 64, 64)).save(tmp_path / ".hidden" / "0.png")
    (tmp_path / "region2" / "notes.txt").write_text("not an image")

    masks = load(tmp_path)
    assert list(masks) == ["region2", "region10"]
    m = masks["region10"]
    assert m.shape == (4, 64, 64) and m.dtype == torch.float32
    for i in range(4):
        cols = torch.nonzero(m[i].any(0)).flatten()
        assert (cols.min().item(), cols.max().item()) == (4 * i, 4 * i + 3)
    assert set(torch.unique(masks["region2"]).tolist()) == {0.0, 1.0}


def test_threshold_on_grey_value(tmp_path):
    grey = rect(64, 64, 0, 0, 32, 64, value=100)  # 0.39
    grey[:, 32:48] = 200  # 0.78
    write_region(tmp_path, "a", [grey] * 2)
    write_region(tmp_path, "b", [rect(64, 64, 50, 50, 60, 60)] * 2)
    at_half = load(tmp_path, frames=2)["a"]
    assert at_half[0, :, :32].sum() == 0 and at_half[0, :, 32:48].all() and at_half[0, :, 48:].sum() == 0
    at_low = load(tmp_path, frames=2, threshold=0.3)["a"]
    assert at_low[0, :, :48].all() and at_low[0, :, 48:].sum() == 0


def test_rgb_and_16bit_masks_are_read_as_grey(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    rgb = np.zeros((64, 64, 3), dtype=np.uint8)
    rgb[10:20, 10:20] = 255
    Image.fromarray(rgb).save(d / "0.png")
    sixteen = np.zeros((64, 64), dtype=np.uint16)
    sixteen[30:40, 30:40] = 65535
    Image.fromarray(sixteen).save(d / "1.png")
    m = load(tmp_path, frames=2)["a"]
    assert m[0].sum() == 100 and m[0, 10:20, 10:20].all()
    assert m[1].sum() == 100 and m[1, 30:40, 30:40].all()


def test_frame_selection_matches_the_video_rule(tmp_path):
    write_region(tmp_path, "r", [rect(200, 50, 10 * i, 0, 10 * i + 10, 50) for i in range(20)])
    sel = FrameSelection(frame_load_cap=4, skip_first_frames=3, select_every_nth=2)
    assert sel.indices(20) == [3, 5, 7, 9]
    assert FrameSelection(0, 15, 2).indices(20) == [15, 17, 19]
    assert FrameSelection(0, 0, 1).indices(5) == [0, 1, 2, 3, 4]
    # keep_aspect snaps 200x50 frames to 192x64; locate each rectangle in source pixels again.
    m = load(tmp_path, frames=4, w=192, h=64, sel=sel)["r"]
    starts = [torch.nonzero(m[i].any(0)).min().item() * 200 / 192 for i in range(4)]
    assert [round(s / 10) for s in starts] == [3, 5, 7, 9]


def test_capped_selection_stops_reading():
    seen = []

    def items():
        for i in range(1000):
            seen.append(i)
            yield i

    picked = [i for i, _ in FrameSelection(frame_load_cap=3, skip_first_frames=2).pick(items())]
    assert picked == [2, 3, 4] and len(seen) <= 6


# --- layout (b): colour-coded labels -------------------------------------------------------------

RED, GREEN, BLUE = (230, 30, 30), (30, 200, 60), (40, 60, 220)


def label_frame(w=96, h=64, shift=0) -> np.ndarray:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[8:40, 4 + shift:36 + shift] = RED
    a[20:60, 50:90] = BLUE
    return a


def test_label_frames_folder_discovers_colours(tmp_path):
    for i in range(3):
        Image.fromarray(label_frame(shift=4 * i)).save(tmp_path / f"{i}.png")
    masks = load(tmp_path, frames=3, w=96 + 0, h=64, source=(96, 64))
    # Named by colour value: BLUE (40, …) sorts before RED (230, …).
    assert list(masks) == ["region_1", "region_2"]
    blue, red = masks["region_1"], masks["region_2"]
    assert blue[0, 20:60, 50:90].all() and blue.sum() == 3 * 40 * 40
    for i in range(3):
        assert red[i, 8:40, 4 + 4 * i:36 + 4 * i].all() and red[i].sum() == 32 * 32


def test_label_frames_named_by_colors_txt(tmp_path):
    for i in range(2):
        Image.fromarray(label_frame()).save(tmp_path / f"{i}.png")
    (tmp_path / "colors.txt").write_text("car: #e61e1e\n\nsky: 283cdc\nroad: #1ec83c\n")
    table_masks = error(load, tmp_path, frames=2, w=96, h=64, source=(96, 64))
    # "road" (green) is in the table but painted nowhere: an empty region is an error.
    assert "'road'" in table_masks.problem and "empty" in table_masks.problem
    (tmp_path / "colors.txt").write_text("car: #e61e1e\nsky: #2838dc\n")
    masks = load(tmp_path, frames=2, w=96, h=64, source=(96, 64))
    assert list(masks) == ["car", "sky"]
    assert masks["car"][0, 8:40, 4:36].all() and masks["car"].sum() == 2 * 32 * 32
    assert masks["sky"].sum() == 2 * 40 * 40


def test_bad_colors_txt_line(tmp_path):
    Image.fromarray(label_frame()).save(tmp_path / "0.png")
    (tmp_path / "colors.txt").write_text("car = red\n")
    e = error(load, tmp_path, frames=1, w=96, h=64)
    assert "line 1" in e.problem and "name: #rrggbb" in e.fix


def test_label_video_survives_compression(tmp_path):
    video = tmp_path / "labels.mp4"
    with av.open(str(video), mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(8, 1))
        s.width, s.height, s.pix_fmt = 128, 64, "yuv420p"
        s.options = {"crf": "28"}
        for i in range(6):
            a = np.zeros((64, 128, 3), dtype=np.uint8)
            a[8:56, 8 + 4 * i:48 + 4 * i] = RED
            a[16:48, 80:120] = GREEN
            c.mux(s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        c.mux(s.encode(None))
    (tmp_path / "labels.colors.txt").write_text("ball: #e61e1e\ngrass: #1ec83c\n")
    masks = load(video, frames=4, w=128, h=64, sel=FrameSelection(4, 1, 1))
    assert list(masks) == ["ball", "grass"]
    for k, i in enumerate(range(1, 5)):  # frames 1..4
        truth = torch.zeros(64, 128)
        truth[8:56, 8 + 4 * i:48 + 4 * i] = 1
        got = masks["ball"][k]
        iou = (got * truth).sum() / torch.maximum(got, truth).sum()
        assert iou > 0.95
    # Without a table the two colours are still found, and nothing else (fringes are noise).
    (tmp_path / "labels.colors.txt").unlink()
    assert list(load(video, frames=6, w=128, h=64)) == ["region_1", "region_2"]


def test_discover_colours_merges_near_colours_and_drops_rare_ones():
    a = np.zeros((100, 100, 3), dtype=np.uint8)
    a[:50] = RED
    a[:10, :10] = (236, 24, 36)  # the same label, shifted by compression
    a[99, 99] = BLUE  # one pixel: noise
    assert discover_colours([a]) == [RED]


# --- alignment: masks land where the frames' content lands -----------------------------------

SRC_W, SRC_H = 1000, 560  # 25:14, keep_aspect at width 512 gives 512x256 (rounding down)
BOX = (300, 140, 700, 420)  # x0, y0, x1, y1 in source pixels


def source_frames(n=2) -> torch.Tensor:
    img = torch.zeros(n, SRC_H, SRC_W, 3)
    x0, y0, x1, y1 = BOX
    img[:, y0:y1, x0:x1] = 1.0
    return img


@pytest.mark.parametrize("mode, width, height", [("keep_aspect", 512, 0), ("keep_aspect", 512, 512),
                                                 ("crop", 512, 512), ("crop", 256, 512), ("pad", 512, 512)])
@pytest.mark.parametrize("scale", [1.0, 0.5])  # masks at the video's size, and at half its size
def test_masks_line_up_with_frames(tmp_path, mode, width, height, scale):
    # The frames go the video's way: plan_frames on the source size with the user's width/height.
    frames = apply_plan(source_frames(), plan_frames(SRC_W, SRC_H, mode, width, height))
    out_h, out_w = frames.shape[1:3]
    mw, mh = int(SRC_W * scale), int(SRC_H * scale)
    x0, y0, x1, y1 = (int(v * scale) for v in BOX)
    write_region(tmp_path, "box", [rect(mw, mh, x0, y0, x1, y1)] * 2)
    masks = load(tmp_path, frames=2, w=out_w, h=out_h, mode=mode, source=(SRC_W, SRC_H))
    box = masks["box"]
    assert box.shape == (2, out_h, out_w)
    bright = frames[..., 0] > 0.5
    iou = (box.bool() & bright).sum() / (box.bool() | bright).sum()
    assert iou > 0.98, iou
    # Exact placement: the box's edges in output pixels, from the plan's scale and offset alone
    # (clipped to the canvas where crop cuts the box).
    plan = plan_frames(SRC_W, SRC_H, mode, width, height)
    sx, sy = plan.resize_w / SRC_W, plan.resize_h / SRC_H
    rows, cols = torch.nonzero(box[0].any(1)).flatten(), torch.nonzero(box[0].any(0)).flatten()
    expect = [min(max(v, 0), lim) for v, lim in ((BOX[0] * sx + plan.offset_x, out_w), (BOX[2] * sx + plan.offset_x, out_w),
                                                 (BOX[1] * sy + plan.offset_y, out_h), (BOX[3] * sy + plan.offset_y, out_h))]
    got = [cols.min().item(), cols.max().item() + 1, rows.min().item(), rows.max().item() + 1]
    assert all(abs(g - e) <= 1.5 for g, e in zip(got, expect)), (got, expect)


def test_keep_aspect_uses_the_frames_size_even_where_plan_frames_rounds_differently():
    # The video (1000x560, width 512) became 512x256; plan_frames on the masks with a 512x256 box
    # would give 448x256. The masks must still come out 512x256.
    assert plan_frames(SRC_W, SRC_H, "keep_aspect", 512, 256).out_w == 448
    plan = plan_masks(SRC_W, SRC_H, "keep_aspect", 512, 256)
    assert (plan.resize_w, plan.resize_h, plan.out_w, plan.out_h) == (512, 256, 512, 256)


def test_masks_already_at_output_size_pass_through(tmp_path):
    a = rect(512, 320, 100, 50, 200, 300)
    write_region(tmp_path, "r", [a, a])
    for mode in ("keep_aspect", "crop", "pad"):
        m = load(tmp_path, frames=2, w=512, h=320, mode=mode)["r"]
        assert torch.equal(m[0], torch.from_numpy(a > 0).float())


# --- errors ---------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    e = error(load, tmp_path / "nope")
    assert e.input_name == "masks_path" and "does not exist" in e.problem


def test_folder_without_images(tmp_path):
    (tmp_path / "empty_region").mkdir()
    e = error(load, tmp_path)
    assert e.input_name == "masks_path" and "no images" in e.problem


def test_missing_frame_in_a_region_names_region_counts_and_file(tmp_path):
    write_region(tmp_path, "a", [rect(64, 64, 0, 0, 8, 8)] * 4)
    write_region(tmp_path, "b", [rect(64, 64, 0, 0, 8, 8)] * 4)
    (tmp_path / "b" / "00002.png").unlink()
    e = error(load, tmp_path)
    assert "'a': 4" in e.problem and "'b': 3" in e.problem and "'b' lacks 00002" in e.problem


def test_mask_frame_count_must_match_the_images(tmp_path):
    write_region(tmp_path, "a", [rect(64, 64, 0, 0, 8, 8)] * 6)
    e = error(load, tmp_path, frames=4)
    assert "6 frames" in e.problem and "have 4" in e.problem and "frame_load_cap" in e.fix
    assert load(tmp_path, frames=4, sel=FrameSelection(4))["a"].shape[0] == 4


def test_selection_beyond_the_end(tmp_path):
    write_region(tmp_path, "a", [rect(64, 64, 0, 0, 8, 8)] * 3)
    e = error(load, tmp_path, sel=FrameSelection(0, 5, 1))
    assert e.input_name == "skip_first_frames"


def test_empty_region_and_threshold_hint(tmp_path):
    write_region(tmp_path, "full_of_nothing", [rect(64, 64, 0, 0, 0, 0)] * 2)
    write_region(tmp_path, "ok", [rect(64, 64, 0, 0, 8, 8)] * 2)
    e = error(load, tmp_path, frames=2)
    assert e.input_name == "masks_path" and "'full_of_nothing' is empty" in e.problem
    write_region(tmp_path, "full_of_nothing", [rect(64, 64, 0, 0, 8, 8, value=60)] * 2)
    e = error(load, tmp_path, frames=2)
    assert e.input_name == "threshold" and "0.24" in e.problem


def test_all_covering_region_loads_and_the_layout_warns(tmp_path, caplog):
    # One rule for every mask source (a file, core SolidMask, a segmenter): accepted, and
    # masks/layout.build_layout warns that the region keeps no background.
    write_region(tmp_path, "everything", [rect(64, 64, 0, 0, 64, 64)] * 2)
    mask = load(tmp_path, frames=2)["everything"]
    assert bool(mask.all())
    with caplog.at_level("WARNING"):
        layout = build_layout([mask], ["everything"], ["x"], ["instance"], (8, 8))
    assert layout.num_regions == 1 and "covers every latent cell" in caplog.text


def test_region_cut_away_by_crop(tmp_path):
    write_region(tmp_path, "edge", [rect(200, 100, 0, 0, 10, 100)] * 2)
    write_region(tmp_path, "middle", [rect(200, 100, 90, 40, 110, 60)] * 2)
    e = error(load, tmp_path, frames=2, w=128, h=128, mode="crop")
    assert e.input_name == "size_mode" and "'edge'" in e.problem


def test_aspect_mismatch(tmp_path):
    write_region(tmp_path, "a", [rect(300, 300, 100, 100, 200, 200)] * 2)
    e = error(load, tmp_path, frames=2, w=512, h=512, mode="crop", source=(1000, 560))
    assert "aspect" in e.problem and "1000x560" in e.problem
    e = error(load, tmp_path, frames=2, w=512, h=256, mode="keep_aspect")
    assert "keep_aspect cannot" in e.problem
    # Within rounding: 1000x560 masks for 512x320 frames snapped from 512x286.7 are fine.
    write_region(tmp_path, "a", [rect(1000, 560, 100, 100, 200, 200)] * 2)
    assert load(tmp_path, frames=2, w=512, h=320)["a"].shape == (2, 320, 512)


def test_mask_images_of_different_sizes(tmp_path):
    write_region(tmp_path, "a", [rect(64, 64, 0, 0, 8, 8)] * 2)
    write_region(tmp_path, "b", [rect(64, 32, 0, 0, 8, 8)] * 2)
    e = error(load, tmp_path, frames=2)
    assert "64x32" in e.problem and "same size" in e.fix


def test_unreadable_mask_image(tmp_path):
    write_region(tmp_path, "a", [rect(64, 64, 0, 0, 8, 8)] * 2)
    (tmp_path / "a" / "00001.png").write_bytes(b"not a png")
    e = error(load, tmp_path, frames=2)
    assert "cannot read" in e.problem


def test_bad_selection_and_threshold_values(tmp_path):
    with pytest.raises(SelectionError) as info:
        FrameSelection(0, 0, 0)
    assert info.value.input_name == "select_every_nth"
    with pytest.raises(SelectionError) as info:
        FrameSelection(-1, 0, 1)
    assert info.value.input_name == "frame_load_cap"
    write_region(tmp_path, "a", [rect(64, 64, 0, 0, 8, 8)] * 2)
    assert error(load, tmp_path, frames=2, threshold=1.0).input_name == "threshold"
    assert error(load, tmp_path, frames=2, mode="stretch").input_name == "size_mode"


def test_not_a_folder_or_video(tmp_path):
    f = tmp_path / "masks.zip"
    f.write_bytes(b"PK")
    assert "neither a folder nor a video" in error(load, f).problem
    v = tmp_path / "broken.mp4"
    v.write_bytes(b"\x00" * 100)
    assert "cannot decode" in error(load, v).problem
