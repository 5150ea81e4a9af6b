"""The chunked VAE nodes give what core VAE Encode / VAE Decode give (tiny model's TAESD, CPU): decoding
bit for bit, encoding to float rounding (a batched convolution sums in another order)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from safetensors.torch import load_file


def test_chunked_encode_and_decode_equal_the_core_nodes(comfy, tiny_model):
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_model}},
        "2": {"class_type": "VideoGrainLoadVideo", "inputs": {
            "video": "videograin_demo/clip.mp4", "frame_load_cap": 5, "skip_first_frames": 0, "select_every_nth": 1,
            "size_mode": "keep_aspect", "width": 128, "height": 0}},
        "3": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "VideoGrainVAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2], "frames_per_chunk": 2}},
        "5": {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "vg_vae/core"}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["4", 0], "filename_prefix": "vg_vae/chunked"}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2]}},
        "8": {"class_type": "VideoGrainVAEDecode", "inputs": {"samples": ["3", 0], "vae": ["1", 2], "frames_per_chunk": 3}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "vg_vae/core"}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "vg_vae/chunked"}},
    }
    entry, progress = comfy.run_with_progress(g)
    out = entry["outputs"]
    core, chunked = (load_file(str(comfy.output_files(out[n])[0]))["latent_tensor"] for n in ("5", "6"))
    # Decoding is exact; encoding differs only by the float rounding of a batched convolution.
    assert core.shape == chunked.shape and core.shape[0] == 5
    assert (core - chunked).abs().max() <= 1e-5 * core.abs().max()
    core_px = [np.asarray(Image.open(p)) for p in comfy.output_files(out["9"])]
    chunk_px = [np.asarray(Image.open(p)) for p in comfy.output_files(out["10"])]
    assert len(core_px) == len(chunk_px) == 5 and all(np.array_equal(a, b) for a, b in zip(core_px, chunk_px))
    decode_ticks = [p for p in progress if p.get("node") == "8"]
    assert decode_ticks and decode_ticks[-1]["max"] == 2  # 5 frames in chunks of 3
