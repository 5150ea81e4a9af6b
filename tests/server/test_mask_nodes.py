"""Mask nodes through the real server: alignment with the loaded video under each sizing rule, clear
errors for bad masks (and the server keeps serving), and the shipped mask-check workflow."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

PACK_DIR = Path(__file__).resolve().parents[2]
DEMO = PACK_DIR / "workflows" / "assets" / "videograin_demo"
API_WORKFLOW = PACK_DIR / "workflows" / "api" / "videograin_mask_check.json"


def demo_mask(name: str, frame: int) -> np.ndarray:
    with Image.open(DEMO / "masks" / name / f"{frame:05d}.png") as im:
        return np.asarray(im) > 127


def graph(masks_path: str, size_mode="keep_aspect", width=512, height=512, cap=4, mask_cap=None,
          region="left_head", video_path=str(DEMO / "clip.mp4")) -> dict:
    """Load video → load masks → one region as image → SaveImage (lossless PNGs), plus the overlay."""
    return {
        "1": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": cap, "skip_first_frames": 0, "select_every_nth": 1,
            "size_mode": size_mode, "width": width, "height": height, "path": video_path}},
        "2": {"class_type": "VideoGrainLoadMasks", "inputs": {
            "images": ["1", 0], "masks_path": masks_path, "size_mode": size_mode,
            "frame_load_cap": cap if mask_cap is None else mask_cap, "skip_first_frames": 0,
            "select_every_nth": 1, "threshold": 0.5, "source_width": ["1", 4], "source_height": ["1", 5]}},
        "3": {"class_type": "VideoGrainSelectMask", "inputs": {"region_masks": ["2", 0], "name": region}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "vg_masks/region"}},
        "6": {"class_type": "VideoGrainMaskOverlay", "inputs": {"images": ["1", 0], "region_masks": ["2", 0],
                                                                "opacity": 0.5}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "vg_masks/overlay"}},
    }


def saved(comfy, outputs: dict, node: str) -> list[np.ndarray]:
    arrays = []
    for path in comfy.output_files({node: outputs[node]}):
        with Image.open(path) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    return arrays


def expected_mask(name: str, frame: int, size_mode: str, width: int, height: int) -> np.ndarray:
    """Where the 512x320 demo mask must land, written out by hand for each case below."""
    m = demo_mask(name, frame)
    if size_mode == "keep_aspect" and (width, height) == (512, 512):
        return m  # 512x320 fits as is
    if size_mode == "crop" and (width, height) == (384, 320):
        return m[:, 64:448]  # scale 1, the centre 384 columns kept
    if size_mode == "pad" and (width, height) == (512, 512):
        out = np.zeros((512, 512), dtype=bool)
        out[96:416] = m  # scale 1, 96 black rows above and below
        return out
    if size_mode == "keep_aspect" and (width, height) == (256, 0):
        # 256x160 rounds to 256x192: an independent nearest-neighbour resize (Pillow) of the source.
        return np.asarray(Image.fromarray(m).resize((256, 192), Image.NEAREST))
    raise AssertionError("no expectation for this case")


@pytest.mark.parametrize("size_mode, width, height", [("keep_aspect", 512, 512), ("crop", 384, 320),
                                                      ("pad", 512, 512), ("keep_aspect", 256, 0)])
def test_masks_align_with_the_loaded_video(comfy, size_mode, width, height):
    outputs = comfy.run(graph(str(DEMO / "masks"), size_mode, width, height))
    masks = saved(comfy, outputs, "5")
    frames = saved(comfy, outputs, "7")
    assert len(masks) == len(frames) == 4
    for f, (got, overlay) in enumerate(zip(masks, frames)):
        want = expected_mask("left_head", f, size_mode, width, height)
        assert got.shape[:2] == overlay.shape[:2] == want.shape
        assert np.array_equal(got[..., 0] > 127, want)


def test_label_video_folder_through_the_server(comfy, tmp_path):
    # A folder of colour label frames painted from the demo masks: the head in red, the body in blue.
    (tmp_path / "colors.txt").write_text("head: #ff0000\nbody: #0000ff\n")
    for f in range(4):
        label = np.zeros((320, 512, 3), dtype=np.uint8)
        label[demo_mask("left_head", f)] = (255, 0, 0)
        label[demo_mask("left_figure_body", f)] = (0, 0, 255)
        Image.fromarray(label).save(tmp_path / f"{f:03d}.png")
    outputs = comfy.run(graph(str(tmp_path), region="head"))
    for f, got in enumerate(saved(comfy, outputs, "5")):
        assert np.array_equal(got[..., 0] > 127, demo_mask("left_head", f))


def test_names_and_colour_preview(comfy):
    prompt = graph(str(DEMO / "masks"), cap=2)
    prompt["8"] = {"class_type": "PreviewAny", "inputs": {"source": ["2", 1]}}
    prompt["9"] = {"class_type": "SaveImage", "inputs": {"images": ["2", 2], "filename_prefix": "vg_masks/combined"}}
    outputs = comfy.run(prompt)
    assert outputs["8"]["text"] == ["background, figures, left_figure, left_figure_body, left_head, "
                                    "right_figure, right_figure_body, right_head"]
    combined = saved(comfy, outputs, "9")
    assert len(combined) == 2 and combined[0].shape == (320, 512, 3)
    img = combined[0].astype(int)
    sky = img[5, 5]
    assert sky.sum() > 100 and (img[~demo_mask("figures", 0)] == sky).all()  # background: one flat colour
    left, right = img[demo_mask("left_head", 0)], img[demo_mask("right_head", 0)]
    assert (left == left[0]).all() and (right == right[0]).all() and not (left[0] == right[0]).all()


def test_select_mask_union_of_names(comfy):
    outputs = comfy.run(graph(str(DEMO / "masks"), region="left_head, left_figure_body"))
    for f, got in enumerate(saved(comfy, outputs, "5")):
        assert np.array_equal(got[..., 0] > 127, demo_mask("left_figure", f))


def assert_serving(comfy):
    outputs = comfy.run(graph(str(DEMO / "masks"), cap=2))
    assert len(saved(comfy, outputs, "5")) == 2


def test_mask_frame_count_mismatch_is_a_clear_error(comfy):
    message = comfy.run_expect_error(graph(str(DEMO / "masks"), cap=4, mask_cap=8))
    assert "VideoGrainLoadMasks input 'masks_path'" in message
    assert "8 frames" in message and "have 4" in message and "Fix:" in message
    assert_serving(comfy)


def test_missing_frame_in_a_region_folder(comfy, tmp_path):
    masks = tmp_path / "masks"
    shutil.copytree(DEMO / "masks", masks)
    (masks / "right_head" / "00003.png").unlink()
    message = comfy.run_expect_error(graph(str(masks)))
    assert "VideoGrainLoadMasks input 'masks_path'" in message
    assert "'right_head': 15" in message and "00003" in message
    assert_serving(comfy)


def test_empty_mask_is_a_clear_error(comfy, tmp_path):
    for name, value in (("figures", None), ("nothing", 0)):
        (tmp_path / name).mkdir()
        for f in range(4):
            a = demo_mask("figures", f).astype(np.uint8) * 255 if value is None else np.zeros((320, 512), np.uint8)
            Image.fromarray(a).save(tmp_path / name / f"{f:05d}.png")
    message = comfy.run_expect_error(graph(str(tmp_path), region="figures"))
    assert "region 'nothing' is empty in every selected frame" in message and "Fix:" in message
    assert_serving(comfy)


def test_missing_masks_folder_fails_at_queue_time(comfy, tmp_path):
    message = comfy.run_expect_error(graph(str(tmp_path / "no_such_masks")))
    assert "VideoGrainLoadMasks input 'masks_path'" in message and "does not exist" in message
    assert_serving(comfy)


def test_mask_check_workflow_writes_a_16_frame_mp4(comfy, comfy_server):
    demo = Path(comfy_server.input_dir) / "videograin_demo"
    if not (demo / "clip.mp4").is_file():
        pytest.fail(f"{demo} is missing. Fix: run bash .ci/setup_host.sh, which copies the bundled assets into "
                    "the input folder", pytrace=False)
    outputs = comfy.run(json.loads(API_WORKFLOW.read_text()))
    [video] = comfy.output_files(outputs)
    assert video.suffix == ".mp4" and video.is_file()
    with av.open(str(video)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
        assert float(stream.average_rate) == 8
    assert len(frames) == 16 and frames[0].shape == (320, 512, 3)
    # The left head is tinted and outlined, the sky far from every figure is only tinted by "background".
    head = demo_mask("left_head", 0)
    with av.open(str(DEMO / "clip.mp4")) as c:
        source = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    diff = np.abs(frames[0].astype(int) - source).sum(-1)
    assert diff[head].mean() > 60
