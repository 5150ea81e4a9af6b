"""The disk inversion cache through real servers (tiny model, 3 frames of 64x64, 4 steps, CFG 1 where the
edit itself does not matter).

The tests here start their own servers (the pack reads VIDEOGRAIN_CACHE_DIR from the server's
environment) and count the inversion's UNet steps by the `progress` messages of the VideoGrainInvert
node: one per DDIM step, none when the inversion comes from the cache.
"""
from __future__ import annotations

import re
import time
import uuid

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import comfy_client
from videograin.sampling.cache import InversionCache

FRAMES, SIZE, STEPS = 3, 64, 4
INVERT = "12"


@pytest.fixture(scope="module")
def clip_name(host_paths):
    name = f"vg_cache_test_{uuid.uuid4().hex[:8]}.tiff"
    path = host_paths.input_dir / name
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = []
    for f in range(FRAMES):
        img = np.stack([0.5 + 0.4 * np.sin(xx / 5.0), yy / SIZE, np.full_like(xx, 0.3, dtype=float)], -1)
        img[(xx - 20 - 8 * f) ** 2 + (yy - 32) ** 2 < 144] = (0.9, 0.1, 0.1)
        frames.append(Image.fromarray((img * 255).astype(np.uint8)))
    frames[0].save(path, save_all=True, append_images=frames[1:])
    yield name
    path.unlink(missing_ok=True)


def start(server_module, host_paths, root, cache_dir, name):
    server = server_module.ComfyServer(host_paths, output_dir=root / "output", temp_dir=root / f"temp_{name}",
                                       log_path=root / f"{name}.log", env={"VIDEOGRAIN_CACHE_DIR": str(cache_dir)})
    server.start()
    server.check_pack_loaded()
    return server, comfy_client.ComfyClient(server.url, server.output_dir, server.temp_dir)


def edit_prompt(ckpt, clip, target, prefix, cache="on", cap=20.0, invert_id=INVERT, branch="", cfg=1.0):
    """Load, encode, invert, edit with `target` (a global edit), save the latent and the frames."""
    b = branch
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoadImage", "inputs": {"image": clip}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball on stripes", "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        f"6{b}": {"class_type": "CLIPTextEncode", "inputs": {"text": target, "clip": ["1", 1]}},
        invert_id: {"class_type": "VideoGrainInvert", "inputs": {
            "model": ["1", 0], "positive": ["4", 0], "latent": ["3", 0], "steps": STEPS,
            "cache": cache, "cache_cap_gb": cap}},
        f"13{b}": {"class_type": "VideoGrainSampler", "inputs": {
            "model": ["1", 0], "inversion": [invert_id, 0], "positive": [f"6{b}", 0], "negative": ["5", 0],
            "cfg": cfg, "steps": STEPS, "seed": 1, "background": "off"}},
        f"14{b}": {"class_type": "VAEDecode", "inputs": {"samples": [f"13{b}", 0], "vae": ["1", 2]}},
        f"15{b}": {"class_type": "SaveImage", "inputs": {"images": [f"14{b}", 0], "filename_prefix": prefix}},
        f"16{b}": {"class_type": "SaveLatent", "inputs": {"samples": [f"13{b}", 0], "filename_prefix": prefix}},
    }


def run_counting(client, prompt):
    """(outputs, inversion UNet steps seen, seconds)."""
    t0 = time.monotonic()
    entry, progress = client.run_with_progress(prompt, timeout=300)
    seconds = time.monotonic() - t0
    return entry["outputs"], len([p for p in progress if p.get("node") == INVERT]), seconds


def entries(cache_dir):
    return [p for p in cache_dir.iterdir()] if cache_dir.exists() else []


def latent_of(client, outputs, node):
    path = next(p for p in client.output_files(outputs[node]) if p.suffix == ".latent")
    return load_file(str(path))["latent_tensor"]


def test_cache_survives_a_restart_and_recovers_from_damage(server_module, host_paths, tiny_model, clip_name,
                                                          tmp_path):
    cache_dir = tmp_path / "cache"
    server, client = start(server_module, host_paths, tmp_path, cache_dir, "first")
    try:
        _, unet_first, t_first = run_counting(client, edit_prompt(tiny_model, clip_name, "a blue ball", "vgc_a"))
        _, unet_off, t_off = run_counting(client, edit_prompt(tiny_model, clip_name, "a green ball", "vgc_off",
                                                              cache="off"))
    finally:
        server.stop()
    files = entries(cache_dir)
    assert unet_first == unet_off > 0 and len(files) == 1 and files[0].suffix == ".safetensors"

    server, client = start(server_module, host_paths, tmp_path, cache_dir, "second")  # a real restart
    try:
        # A new target prompt after the restart: the inversion comes from the disk, the UNet is not run.
        _, unet_hit, t_hit = run_counting(client, edit_prompt(tiny_model, clip_name, "a yellow ball", "vgc_b"))
        assert unet_hit == 0, server.log_tail()
        assert "[VideoGrain] inversion cache hit" in server.log_text() and str(files[0]) in server.log_text()
        # The same re-edit, warm, without the cache (for the numbers only).
        _, unet_warm_off, t_warm_off = run_counting(client, edit_prompt(tiny_model, clip_name, "a pink ball",
                                                                        "vgc_w", cache="off"))
        _, _, t_warm_hit = run_counting(client, edit_prompt(tiny_model, clip_name, "a grey ball", "vgc_h", cap=21.0))
        log = server.log_text()
        hit_s = [float(x) for x in re.findall(r"inversion cache hit .*?key and load ([0-9.]+) s", log)]
        run_s = [float(x) for x in re.findall(r"inversion computed: \d+ steps in ([0-9.]+) s", log)]
        print(f"[cache numbers, Invert node only] hits {hit_s} s, computed {run_s} s")  # noqa: T201
        print(f"[cache numbers, tiny model, {FRAMES}x{SIZE}px, {STEPS} steps, CPU] before the restart: first edit "  # noqa: T201
              f"{t_first:.2f} s, cache off {t_off:.2f} s ({unet_off} inversion steps); after the restart: first "
              f"re-edit {t_hit:.2f} s (model load included) with {unet_hit} inversion steps; warm re-edit with the "
              f"cache {t_warm_hit:.2f} s (0 steps), without {t_warm_off:.2f} s ({unet_warm_off} steps)")

        # A truncated file is detected, reported and recomputed (a new cap forces ComfyUI to re-run the node).
        data = files[0].read_bytes()
        files[0].write_bytes(data[: len(data) // 2])
        _, unet_damaged, _ = run_counting(client, edit_prompt(tiny_model, clip_name, "a yellow ball", "vgc_c", cap=19.0))
        assert unet_damaged == unet_off
        assert "is unusable" in server.log_text()
        # ... and a corrupted one (same length, flipped bytes in the tensor data).
        data = bytearray(files[0].read_bytes())
        data[-64:] = bytes(255 - x for x in data[-64:])
        files[0].write_bytes(bytes(data))
        _, unet_corrupt, _ = run_counting(client, edit_prompt(tiny_model, clip_name, "a yellow ball", "vgc_d", cap=18.0))
        assert unet_corrupt == unet_off and "sha256" in server.log_text()

        # Two queued prompts that write the same key (refresh recomputes and overwrites) leave one valid file.
        ids = [client.queue(edit_prompt(tiny_model, clip_name, "a cyan ball", f"vgc_r{i}", cache="refresh",
                                        cap=17.0 - i)) for i in range(2)]
        for pid in ids:
            assert client.wait(pid, timeout=300)["status"]["status_str"] == "success"
        names = [p.name for p in entries(cache_dir)]
        assert names == [files[0].name], names  # no temp files left, one entry
        store = InversionCache(cache_dir, 10**9)
        assert store.get(files[0].name[:64]) is not None  # whole and readable

        # A cap of 0 is refused, naming the input.
        message = client.run_expect_error(edit_prompt(tiny_model, clip_name, "a red ball", "vgc_z", cap=0.0))
        assert "cache_cap_gb" in message

        # The clear node empties the folder and says so.
        outputs = client.run({"1": {"class_type": "VideoGrainClearInversionCache", "inputs": {"clear": False}}})
        assert outputs["1"]["text"][0].startswith("the cache holds 1 inversions") and len(entries(cache_dir)) == 1
        outputs = client.run({"1": {"class_type": "VideoGrainClearInversionCache", "inputs": {"clear": True}}})
        report = outputs["1"]["text"][0]
        assert report.startswith("removed 1 inversions") and entries(cache_dir) == []
    finally:
        server.stop()


def test_unwritable_cache_folder_warns_and_the_edit_runs(server_module, host_paths, tiny_model, clip_name, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    server, client = start(server_module, host_paths, tmp_path, blocker / "cache", "unwritable")
    try:
        outputs, unet, _ = run_counting(client, edit_prompt(tiny_model, clip_name, "a blue ball", "vgc_u"))
        assert unet > 0 and len(client.output_files(outputs["15"])) >= FRAMES
        assert any("could not store the inversion" in w.get("message", "") for w in client.warnings)
    finally:
        server.stop()


def test_two_identical_edits_are_bit_identical_on_cpu(comfy, tiny_model, clip_name):
    """Two branches of one prompt, each with its own (uncached) inversion: identical latents and frames."""
    prompt = edit_prompt(tiny_model, clip_name, "a blue ball", "vgdet_a", cache="off", cap=20.0, cfg=7.5)
    # The second branch differs only in a no-op input (the cap of a cache that is off), so ComfyUI runs it.
    prompt.update({k: v for k, v in edit_prompt(tiny_model, clip_name, "a blue ball", "vgdet_b", cache="off",
                                                cap=21.0, invert_id="22", branch="b", cfg=7.5).items()
                   if k in ("22", "6b", "13b", "14b", "15b", "16b")})
    outputs = comfy.run(prompt, timeout=300)
    a, b = latent_of(comfy, outputs, "16"), latent_of(comfy, outputs, "16b")
    assert torch.equal(a, b)
    frames_a = [np.asarray(Image.open(p)) for p in comfy.output_files(outputs["15"]) if p.suffix == ".png"]
    frames_b = [np.asarray(Image.open(p)) for p in comfy.output_files(outputs["15b"]) if p.suffix == ".png"]
    assert len(frames_a) == FRAMES and all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b))
