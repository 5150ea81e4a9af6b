"""The bundled synthetic clip: deterministic, masks exact and nested, committed assets up to date."""
from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import synthetic_clip as synthetic  # .ci/synthetic_clip.py (tests/conftest.py puts .ci on sys.path)
from synthetic_clip import FIGURES, FPS, FRAMES, HEIGHT, REGIONS, WIDTH, render_clip, write_masks

PACK_DIR = Path(__file__).resolve().parents[2]
ASSETS = PACK_DIR / "workflows" / "assets" / "videograin_demo"


@pytest.fixture(scope="module")
def clip():
    return render_clip()


def test_shape_and_regions(clip):
    assert clip.frames.shape == (FRAMES, HEIGHT, WIDTH, 3) == (16, 320, 512, 3)
    assert clip.frames.dtype == np.uint8 and clip.fps == FPS == 8
    assert tuple(clip.masks) == REGIONS
    for name, m in clip.masks.items():
        assert m.shape == (16, 320, 512) and m.dtype == bool
        assert all(m[f].any() and not m[f].all() for f in range(16)), name


def test_render_is_deterministic(clip):
    again = render_clip()
    assert np.array_equal(clip.frames, again.frames)
    assert all(np.array_equal(clip.masks[k], again.masks[k]) for k in REGIONS)


def test_masks_nest_and_instances_are_disjoint(clip):
    m = clip.masks
    for side in ("left", "right"):
        head, body, fig = m[f"{side}_head"], m[f"{side}_figure_body"], m[f"{side}_figure"]
        assert not (head & body).any()  # parts are disjoint
        assert np.array_equal(head | body, fig)  # parts make up the instance
        assert not (fig & ~m["figures"]).any()  # instance ⊂ class
    assert not (m["left_figure"] & m["right_figure"]).any()
    assert np.array_equal(m["left_figure"] | m["right_figure"], m["figures"])
    assert np.array_equal(m["background"], ~m["figures"])


def test_masks_are_exactly_the_painted_pixels(clip):
    f, m = clip.frames.astype(int), clip.masks
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    # Shirts: left red-dominant, right blue-dominant; heads skin-toned (r > g > b); all of it, nowhere else.
    assert (r[m["left_figure_body"]] > g[m["left_figure_body"]] + 40).all()
    assert (b[m["right_figure_body"]] > r[m["right_figure_body"]] + 40).all()
    heads = m["left_head"] | m["right_head"]
    assert ((r[heads] > g[heads]) & (g[heads] > b[heads])).all()
    # The background is the static meadow/sky: identical to a figure-free render wherever it shows.
    bg = np.clip(np.floor(synthetic.background() + 0.5), 0, 255).astype(np.uint8)
    for i in range(FRAMES):
        keep = m["background"][i]
        assert np.array_equal(clip.frames[i][keep], bg[keep])
        assert not np.array_equal(clip.frames[i][~keep], bg[~keep])


def test_figures_move_at_different_speeds(clip):
    def centre_x(mask):
        return np.nonzero(mask.any(0))[0].mean()

    for fig in FIGURES:
        xs = [centre_x(clip.masks[f"{fig.name}_figure"][i]) for i in range(FRAMES)]
        steps = np.diff(xs)
        assert np.allclose(steps, fig.speed, atol=1.0), (fig.name, steps)
    assert FIGURES[0].speed != FIGURES[1].speed


def test_background_is_textured_not_flat(clip):
    bg = synthetic.background()
    sky, grass = bg[: synthetic.HORIZON - 10], bg[synthetic.HORIZON + 10:]
    assert sky[..., 2].mean() > sky[..., 1].mean() and grass[..., 1].mean() > grass[..., 0].mean()
    assert sky.std(axis=(0, 1)).min() > 5 and grass.std(axis=(0, 1)).min() > 3


def test_mask_pngs_same_bytes_every_time(tmp_path, clip):
    small = {k: v[:2] for k, v in clip.masks.items()}
    write_masks(small, tmp_path / "a")
    write_masks(small, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 2 * len(REGIONS)
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    with Image.open(tmp_path / "a" / "left_head" / "00001.png") as im:
        assert im.mode == "L" and im.size == (WIDTH, HEIGHT)
        assert np.array_equal(np.asarray(im) > 0, clip.masks["left_head"][1])
        assert set(np.unique(np.asarray(im))) == {0, 255}


def test_committed_masks_match_the_generator(clip):
    for name in REGIONS:
        files = sorted((ASSETS / "masks" / name).glob("*.png"))
        assert [p.name for p in files] == [f"{i:05d}.png" for i in range(FRAMES)], name
        for i, p in enumerate(files):
            with Image.open(p) as im:
                assert np.array_equal(np.asarray(im) > 127, clip.masks[name][i]), p


def test_committed_clip_decodes_to_the_rendered_frames(clip):
    with av.open(str(ASSETS / "clip.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == FPS
        frames = np.stack([fr.to_ndarray(format="rgb24") for fr in c.decode(stream)])
    assert frames.shape == clip.frames.shape
    mse = np.mean((frames.astype(float) - clip.frames.astype(float)) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 30  # lossy, but the same pictures


def test_committed_assets_are_small():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 1_000_000, total


def test_script_regenerates_the_committed_bytes(tmp_path):
    import subprocess
    import sys

    subprocess.run([sys.executable, str(PACK_DIR / ".ci" / "make_demo_clip.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    digest = {}
    for root in (tmp_path, ASSETS):
        digest[root] = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted((root / "masks").rglob("*.png"))}
    assert digest[tmp_path] == digest[ASSETS]
    assert (tmp_path / "clip.mp4").stat().st_size > 10_000
