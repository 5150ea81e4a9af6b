"""The test host itself: both random checkpoints run through core nodes in the real server,
progress arrives on the websocket, /interrupt stops a run, bad prompts come back as node errors."""
from __future__ import annotations

import time

import pytest
from PIL import Image
from safetensors.torch import load_file

from comfy_client import ComfyPromptError, ComfyRunError


def txt2img(ckpt: str, prefix: str, width=64, height=64, batch=2, steps=2) -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode ->
    SaveImage, plus SaveLatent to read the raw latent back."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red ball on a striped floor", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 7, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal",
            "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": prefix}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": prefix}},
    }


def check_outputs(comfy, outputs: dict, width: int, height: int, batch: int) -> None:
    images = comfy.output_files(outputs["7"])
    assert len(images) == batch
    for path in images:
        with Image.open(path) as im:
            assert im.size == (width, height) and im.mode == "RGB"
    (latent_path,) = comfy.output_files(outputs["8"])
    latent = load_file(str(latent_path))["latent_tensor"]
    assert tuple(latent.shape) == (batch, 4, height // 8, width // 8)
    assert latent.isfinite().all(), "random weights must keep sampling finite"
    assert latent.float().std() > 0


def test_tiny_model_txt2img_with_progress(comfy, tiny_model):
    entry, progress = comfy.run_with_progress(txt2img(tiny_model, "harness_tiny", steps=3), timeout=120)
    check_outputs(comfy, entry["outputs"], 64, 64, 2)
    sampler_steps = [p["value"] for p in progress if p["node"] == "5"]
    assert sampler_steps == [1, 2, 3] and all(p["max"] == 3 for p in progress if p["node"] == "5")


def test_tiny_model_other_size(comfy, tiny_model):
    outputs = comfy.run(txt2img(tiny_model, "harness_tiny_rect", width=128, height=64, batch=1), timeout=120)
    check_outputs(comfy, outputs, 128, 64, 1)


def test_broken_prompt_returns_node_errors(comfy, tiny_model):
    prompt = txt2img(tiny_model, "harness_broken")
    prompt["1"]["inputs"]["ckpt_name"] = "no_such_model.safetensors"
    prompt["5"]["inputs"]["sampler_name"] = "no_such_sampler"
    with pytest.raises(ComfyPromptError) as err:
        comfy.queue(prompt)
    assert set(err.value.node_errors) == {"1", "5"}
    assert err.value.node_errors["5"]["class_type"] == "KSampler"
    message = comfy.run_expect_error(prompt)
    assert "no_such_model.safetensors" in message and "no_such_sampler" in message


def test_runtime_error_is_reported(comfy):
    # SaveImage refuses to write outside the output folder: an error raised while running.
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "../../escape"}},
    }
    with pytest.raises(ComfyRunError) as err:
        comfy.run(prompt)
    assert err.value.execution_error["node_type"] == "SaveImage"
    assert "SaveImage" in comfy.run_expect_error(prompt)


def test_interrupt_stops_a_running_prompt(comfy, tiny_model):
    import websocket

    steps = 200
    slow = txt2img(tiny_model, "harness_interrupt", width=256, height=256, batch=4, steps=steps)
    slow["5"]["inputs"]["seed"] = 11  # a fresh seed: never served from the cache
    ws = websocket.create_connection(comfy.url.replace("http://", "ws://") + f"/ws?clientId={comfy.client_id}",
                                     timeout=120)
    try:
        prompt_id = comfy.queue(slow)
        while True:  # wait until the sampler is really stepping
            msg = ws.recv()
            if isinstance(msg, str) and '"progress"' in msg and prompt_id in msg:
                break
    finally:
        ws.close()
    t0 = time.monotonic()
    comfy.interrupt()
    entry = comfy.wait(prompt_id, timeout=60)
    stopped_after = time.monotonic() - t0
    assert entry["status"]["status_str"] == "error" and ComfyRunError(entry).interrupted
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert not comfy.output_files(entry.get("outputs", {}))
    # The server keeps serving after the interrupt.
    check_outputs(comfy, comfy.run(txt2img(tiny_model, "harness_after_interrupt", batch=1)), 64, 64, 1)


def test_a_failed_pack_import_fails_with_the_log(tmp_path, host_paths, server_module):
    """What the fixture relies on: an IMPORT FAILED line in the server log is an error that
    carries the log (checked on a written log; no second server needed)."""
    server = server_module.ComfyServer(host_paths, output_dir=tmp_path / "out", log_path=tmp_path / "log.txt")
    server.log_path.write_text("Traceback (most recent call last):\nImportError: boom\n"
                               "   0.1 seconds (IMPORT FAILED): /base/custom_nodes/comfyui-videograin\n")
    with pytest.raises(server_module.ServerError) as err:
        server.check_pack_loaded()
    assert "comfyui-videograin" in str(err.value) and "ImportError: boom" in str(err.value)


@pytest.mark.full_model
def test_full_random_sd15_txt2img(comfy, full_model):
    """The exact SD1.5 architecture loads through core CheckpointLoaderSimple and samples."""
    try:
        outputs = comfy.run(txt2img(full_model, "harness_full"), timeout=300)
        check_outputs(comfy, outputs, 64, 64, 2)
    finally:
        comfy.free()  # the full model holds several GB of the server's RAM
