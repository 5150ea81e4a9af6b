"""VideoGrainInvert and VideoGrainSampler through the real server with the tiny random checkpoint.

Latents are read back exactly: core SaveLatent writes them as safetensors into the session's output
folder, and the tests load those files.
"""
from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from videograin.sampling import schedule

FRAMES, SIZE = 3, 64
SOURCE_PROMPT = "a red ball rolling on a striped floor"


@pytest.fixture(scope="module")
def clip_name(comfy_server):
    """A 3-frame RGB clip (moving disc over stripes) as a multi-page TIFF that core LoadImage reads as
    one IMAGE batch; removed from the shared input folder afterwards."""
    name = f"vg_inv_test_{uuid.uuid4().hex[:8]}.tiff"
    path = comfy_server.input_dir / name
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    frames = []
    for f in range(FRAMES):
        img = np.zeros((SIZE, SIZE, 3), np.float32)
        img[..., 0] = 0.5 + 0.4 * np.sin(xx / 5.0)
        img[..., 1] = yy / SIZE
        img[..., 2] = 0.3
        disc = (xx - 20 - 8 * f) ** 2 + (yy - 32) ** 2 < 12 ** 2
        img[disc] = (0.9, 0.1, 0.1)
        frames.append(Image.fromarray((img * 255).astype(np.uint8)))
    frames[0].save(path, save_all=True, append_images=frames[1:])
    yield name
    path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def controlnet_name(comfy_server, host_paths):
    """A random tiny ControlNet (tests/server/tiny_controlnet.py) in the host's controlnet folder."""
    name = f"vg_test_tiny_controlnet_{uuid.uuid4().hex[:8]}.safetensors"
    path = host_paths.base_dir / "models" / "controlnet" / name
    script = Path(__file__).with_name("tiny_controlnet.py")
    subprocess.run([str(host_paths.python), str(script), str(path), str(host_paths.comfy_dir)], check=True,
                   timeout=300)
    yield name
    path.unlink(missing_ok=True)


def _base(ckpt: str, clip: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "LoadImage", "inputs": {"image": clip}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": SOURCE_PROMPT, "clip": ["1", 1]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["1", 1]}},
    }


def _invert(model, latent, steps, positive=("4", 0)) -> dict:
    return {"class_type": "VideoGrainInvert", "inputs": {
        "model": list(model), "positive": list(positive), "latent": list(latent), "steps": steps}}


def _sample(model, inversion, cfg, steps, background, positive=("4", 0), negative=("5", 0), seed=42) -> dict:
    return {"class_type": "VideoGrainSampler", "inputs": {
        "model": list(model), "inversion": list(inversion), "positive": list(positive),
        "negative": list(negative), "cfg": cfg, "steps": steps, "seed": seed, "background": background}}


def _save_latent(samples, prefix: str) -> dict:
    return {"class_type": "SaveLatent", "inputs": {"samples": list(samples), "filename_prefix": prefix}}


def _latent(comfy, outputs: dict, node: str) -> torch.Tensor:
    (path,) = comfy.output_files(outputs[node])
    return load_file(str(path))["latent_tensor"].float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_invert_then_reconstruct(comfy, tiny_model, clip_name):
    """Invert with the source prompt, re-sample with it at cfg 1 and no blend: the source comes back.

    Two things make random weights differ from SD1.5, and the test corrects both with core nodes:
    - the random TAESD encodes to latents ~300× smaller than SD's VAE (std 0.017 instead of ~5), so the
      UNet's output would swamp them: LatentMultiply ×300 restores SD's latent scale (checked below);
    - DDIM's round trip is exact only where eps is constant along each step (inversion uses eps at one
      end of an interval, sampling at the other). A trained model is smooth along its own trajectories;
      the random UNet has a large Jacobian, and the reverse ODE amplifies the mismatch: at full scale
      the reconstruction ends 1.5× |source| away, no closer than a random latent (measured in-process).
      Scaling every UNet weight by 0.35 (ModelMergeSimple against a zeroed copy) keeps a non-linear
      function of x and t that still moves the latent by ~0.3× its size, but contracting. Then the round
      trip must undo most of that move (measured: error 0.054 for a move of 0.29).
    """
    steps = 10
    prompt = _base(tiny_model, clip_name)
    prompt.update({
        # ×300 in three LatentMultiply nodes (each allows at most ×10)
        "6": {"class_type": "LatentMultiply", "inputs": {"samples": ["3", 0], "multiplier": 10.0}},
        "7": {"class_type": "LatentMultiply", "inputs": {"samples": ["6", 0], "multiplier": 10.0}},
        "8": {"class_type": "LatentMultiply", "inputs": {"samples": ["7", 0], "multiplier": 3.0}},
        "10": {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["1", 0], "model2": ["1", 0], "multiplier": 1.0}},
        "11": {"class_type": "ModelMergeSimple", "inputs": {"model1": ["1", 0], "model2": ["10", 0], "ratio": 0.35}},
        "12": _invert(("11", 0), ("8", 0), steps),
        "13": _sample(("11", 0), ("12", 0), 1.0, steps, "off", negative=("4", 0)),
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["1", 2]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "vg_inv_recon"}},
        "16": _save_latent(("8", 0), "vg_inv_source"),
        "17": _save_latent(("13", 0), "vg_inv_recon"),
        "18": _save_latent(("12", 1), "vg_inv_noisy"),
    })
    entry, progress = comfy.run_with_progress(prompt, timeout=240)
    outputs = entry["outputs"]
    source, recon, noisy = (_latent(comfy, outputs, n) for n in ("16", "17", "18"))
    assert source.shape == recon.shape == noisy.shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    assert len(comfy.output_files(outputs["15"])) == FRAMES
    assert 0.5 < float(source.std()) * 0.18215 < 2.0, "premise: source at SD's latent scale"

    # The clean latent counts as level t = 1: x_vp = z there, so ComfyUI's x starts at z·sqrt(1 + σ_1²).
    start = source * float((1 + schedule.sigmas_table()[1] ** 2).sqrt())
    displacement = _rel(noisy, start)
    error = _rel(recon, source)
    random_latent = _rel(torch.randn_like(source) * source.std() + source.mean(), source)  # about sqrt(2)
    print(f"inversion moved the latent by {displacement:.3f}; reconstruction error {error:.4f}; "  # noqa: T201
          f"a random latent {random_latent:.3f} (relative to |source|)")
    assert displacement > 0.15, "the damped model must still move the latent, or the test is void"
    assert error < 0.35 * displacement
    assert error < 0.1 * random_latent

    # One progress tick per UNet call: 9 for the inversion (10 levels), 10 for the edit.
    ticks = {node: [p["value"] for p in progress if p["node"] == node] for node in ("12", "13")}
    assert ticks["12"] == list(range(1, steps)) and ticks["13"] == list(range(1, steps + 1))


def test_one_frame_equals_core_sampling(comfy, tiny_model, clip_name):
    """One frame: space-time attention is per-frame attention, so with an unpatched model and no blend
    the edit is core DDIM (SamplerCustom, ddim, ddim_uniform) from noisy_latent, bit for bit; and the
    inversion is core's Euler climbing the flipped schedule from z·sqrt(1 + σ_1²)."""
    steps, cfg = 8, 4.5
    scale = float((1 + schedule.sigmas_table()[1].float() ** 2).sqrt())
    prompt = _base(tiny_model, clip_name)
    prompt.update({
        "20": {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 1, "length": 1}},
        "21": {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["1", 2]}},
        "22": _invert(("1", 0), ("21", 0), steps),
        "23": _sample(("1", 0), ("22", 0), cfg, steps, "off"),
        "24": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "ddim"}},
        "25": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "ddim_uniform",
                                                          "steps": steps, "denoise": 1.0}},
        "26": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": False, "noise_seed": 0, "cfg": cfg, "positive": ["4", 0],
            "negative": ["5", 0], "sampler": ["24", 0], "sigmas": ["25", 0], "latent_image": ["22", 1]}},
        "27": _save_latent(("23", 0), "vg_parity_ours"),
        "28": _save_latent(("26", 0), "vg_parity_core"),
        # Core inversion: σ_T … σ_1 (drop the final 0), flipped; start at z·sqrt(1 + σ_1²).
        "29": {"class_type": "SplitSigmas", "inputs": {"sigmas": ["25", 0], "step": steps - 1}},
        "30": {"class_type": "FlipSigmas", "inputs": {"sigmas": ["29", 0]}},
        "31": {"class_type": "LatentMultiply", "inputs": {"samples": ["21", 0], "multiplier": scale}},
        "32": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": False, "noise_seed": 0, "cfg": 1.0, "positive": ["4", 0],
            "negative": ["4", 0], "sampler": ["24", 0], "sigmas": ["30", 0], "latent_image": ["31", 0]}},
        "33": _save_latent(("32", 0), "vg_parity_core_inv"),
        "34": _save_latent(("22", 1), "vg_parity_ours_inv"),
    })
    outputs = comfy.run(prompt, timeout=240)
    ours, core = _latent(comfy, outputs, "27"), _latent(comfy, outputs, "28")
    assert ours.shape == (1, 4, SIZE // 8, SIZE // 8)
    assert ours.isfinite().all() and ours.std() > 0
    assert torch.equal(ours, core), f"max difference {float((ours - core).abs().max())}"
    # Only the start differs, in rounding (z·0.18215·c vs z·c·0.18215: ~1e-7); the random UNet amplifies
    # that along the climb (measured 3e-5 relative). Leaving out the start scaling c = 1.00085 alone would
    # be ~1e-3 before amplification.
    ours_inv, core_inv = _latent(comfy, outputs, "34"), _latent(comfy, outputs, "33")
    assert _rel(ours_inv, core_inv) < 1e-3


def test_steps_mismatch_is_a_named_error(comfy, tiny_model, clip_name):
    prompt = _base(tiny_model, clip_name)
    prompt.update({
        "12": _invert(("1", 0), ("3", 0), 4),
        "13": _sample(("1", 0), ("12", 0), 7.5, 5, "source_noise"),
        "17": _save_latent(("13", 0), "vg_inv_mismatch"),
    })
    message = comfy.run_expect_error(prompt)
    assert "VideoGrainSampler input 'steps'" in message
    assert "inversion was made with 4 steps" in message and "set steps to 4" in message


def _layout_nodes(layout_latent=("3", 0)) -> dict:
    """One region (left half of every frame) bound to "ball", and the patched model."""
    return {
        "40": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}},
        "41": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE // 2, "height": SIZE}},
        "42": {"class_type": "MaskComposite", "inputs": {"destination": ["40", 0], "source": ["41", 0],
                                                         "x": 0, "y": 0, "operation": "add"}},
        "43": {"class_type": "VideoGrainRegion", "inputs": {"mask": ["42", 0], "prompt": "ball", "kind": "instance"}},
        "44": {"class_type": "VideoGrainLayout", "inputs": {
            "clip": ["1", 1], "global_prompt": "a blue ball rolling on a striped floor",
            "latent": list(layout_latent), "regions": ["43", 0]}},
        "45": {"class_type": "VideoGrainApplySTLayout", "inputs": {
            "model": ["1", 0], "layout": ["44", 1], "cross_strength": 1.0, "self_strength": 0.3,
            "modulated_fraction": 0.3, "levels": "below_highest", "cross_branch": "cond", "self_branch": "uncond"}},
    }


def test_background_stays_on_the_source(comfy, tiny_model, clip_name):
    """Outside the union mask the edit ends exactly on the source latent (final paste) in both blend
    modes; without the blend the background drifts; inside the mask the edit changes the latent."""
    steps = 8
    prompt = _base(tiny_model, clip_name)
    prompt.update(_layout_nodes())
    prompt["46"] = _invert(("1", 0), ("3", 0), steps)
    for node, mode in (("50", "source_noise"), ("51", "inversion_path"), ("52", "off")):
        prompt[node] = _sample(("45", 0), ("46", 0), 7.5, steps, mode, positive=("44", 0))
        prompt[f"6{node[1]}"] = _save_latent((node, 0), f"vg_bg_{mode}")
    prompt["63"] = _save_latent(("3", 0), "vg_bg_source")
    outputs = comfy.run(prompt, timeout=300)
    source = _latent(comfy, outputs, "63")
    half = SIZE // 16  # latent columns of the left (edited) half
    for node, mode in (("60", "source_noise"), ("61", "inversion_path"), ("62", "off")):
        edit = _latent(comfy, outputs, node)
        outside, inside = edit[..., half:], edit[..., :half]
        inside_change = _rel(inside, source[..., :half])
        outside_change = _rel(outside, source[..., half:])
        print(f"{mode}: inside changed by {inside_change:.3f}, outside by {outside_change:.2e}")  # noqa: T201
        assert inside_change > 0.1
        if mode == "off":
            assert outside_change > 0.1
        else:  # process_latent_in then _out: z·0.18215/0.18215, float rounding only
            assert torch.allclose(outside, source[..., half:], rtol=1e-5, atol=1e-6)


def test_layout_frame_count_must_match(comfy, tiny_model, clip_name):
    prompt = _base(tiny_model, clip_name)
    prompt.update({
        "20": {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": 2}},
        "21": {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["1", 2]}},
    })
    prompt.update(_layout_nodes(layout_latent=("21", 0)))  # layout for 2 frames
    prompt["46"] = _invert(("1", 0), ("3", 0), 4)           # inversion of 3
    prompt["50"] = _sample(("45", 0), ("46", 0), 7.5, 4, "source_noise", positive=("44", 0))
    prompt["60"] = _save_latent(("50", 0), "vg_bg_mismatch")
    message = comfy.run_expect_error(prompt)
    assert "VideoGrainSampler input 'inversion'" in message
    assert "3 frames" in message and "2 frames" in message


def test_controlnet_conditioning_reaches_inversion_and_edit(comfy, tiny_model, clip_name, controlnet_name):
    """Core ControlNetApplyAdvanced on the source and edit prompts: it changes the inversion and the
    edit, and for one frame the edit with ControlNet still equals core SamplerCustom bit for bit (the
    ControlNet runs through core's code path; its own attention is never patched)."""
    steps, cfg = 4, 5.0
    prompt = _base(tiny_model, clip_name)
    prompt.update({
        "20": {"class_type": "ImageFromBatch", "inputs": {"image": ["2", 0], "batch_index": 0, "length": 1}},
        "21": {"class_type": "VAEEncode", "inputs": {"pixels": ["20", 0], "vae": ["1", 2]}},
        "70": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": controlnet_name}},
        "71": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["4", 0], "negative": ["5", 0], "control_net": ["70", 0], "image": ["20", 0],
            "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}},
        "72": _invert(("1", 0), ("21", 0), steps, positive=("71", 0)),
        "73": _invert(("1", 0), ("21", 0), steps),
        "74": _sample(("1", 0), ("72", 0), cfg, steps, "off", positive=("71", 0), negative=("71", 1)),
        "75": _sample(("1", 0), ("72", 0), cfg, steps, "off"),
        "76": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "ddim"}},
        "77": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "ddim_uniform",
                                                          "steps": steps, "denoise": 1.0}},
        "78": {"class_type": "SamplerCustom", "inputs": {
            "model": ["1", 0], "add_noise": False, "noise_seed": 0, "cfg": cfg, "positive": ["71", 0],
            "negative": ["71", 1], "sampler": ["76", 0], "sigmas": ["77", 0], "latent_image": ["72", 1]}},
        "80": _save_latent(("72", 1), "vg_cn_inv"),
        "81": _save_latent(("73", 1), "vg_cn_inv_plain"),
        "82": _save_latent(("74", 0), "vg_cn_edit"),
        "83": _save_latent(("75", 0), "vg_cn_edit_plain"),
        "84": _save_latent(("78", 0), "vg_cn_core"),
    })
    outputs = comfy.run(prompt, timeout=240)
    inv, inv_plain, edit, edit_plain, core = (_latent(comfy, outputs, n) for n in ("80", "81", "82", "83", "84"))
    assert _rel(inv, inv_plain) > 1e-3, "the ControlNet did not reach the inversion"
    assert _rel(edit, edit_plain) > 1e-3, "the ControlNet did not reach the edit"
    assert torch.equal(edit, core), f"max difference {float((edit - core).abs().max())}"


def test_interrupt_stops_the_inversion_and_writes_nothing(comfy, tiny_model, clip_name):
    """POST /interrupt during the inversion ends the run as interrupted; no latent file is written."""
    import json

    import websocket

    prefix = f"vg_interrupt_{uuid.uuid4().hex[:8]}"
    prompt = _base(tiny_model, clip_name)
    prompt.update({
        "12": _invert(("1", 0), ("3", 0), 500),  # minutes of work: only the interrupt can end it quickly
        "13": _sample(("1", 0), ("12", 0), 7.5, 500, "off"),
        "17": _save_latent(("13", 0), prefix),
    })
    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(comfy.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}",
                                     timeout=120)
    try:
        prompt_id = comfy.queue(prompt, client_id=client_id)
        while True:  # wait until the inversion has made progress, then interrupt
            msg = ws.recv()
            if isinstance(msg, str):
                data = json.loads(msg)
                if data["type"] == "progress" and data["data"].get("node") == "12" and data["data"]["value"] >= 2:
                    break
        comfy.interrupt()
    finally:
        ws.close()
    entry = comfy.wait(prompt_id, timeout=60)
    assert entry["status"]["status_str"] == "error"
    assert any(name == "execution_interrupted" for name, _ in entry["status"]["messages"])
    assert not list(comfy.output_dir.glob(f"**/{prefix}*"))
