"""User-facing error wording (nodes/errors.py imports no ComfyUI, so it is loaded by path here:
importing it through the `nodes` package would register every node and need a ComfyUI host)."""
import importlib.util
import pathlib

import pytest
import torch

_spec = importlib.util.spec_from_file_location(
    "videograin_errors_under_test", pathlib.Path(__file__).resolve().parents[2] / "nodes" / "errors.py")
errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(errors)
VideoGrainInputError, VideoGrainOutOfMemory = errors.VideoGrainInputError, errors.VideoGrainOutOfMemory
out_of_memory_hint = errors.out_of_memory_hint


def test_input_error_names_node_input_and_fix():
    error = VideoGrainInputError("VideoGrainLayout", "global_prompt", "too long", "shorten it")
    assert str(error) == "VideoGrainLayout input 'global_prompt': too long. Fix: shorten it"


def test_out_of_memory_is_reworded_but_stays_an_out_of_memory_error():
    with pytest.raises(VideoGrainOutOfMemory) as caught:
        with out_of_memory_hint("VideoGrainSampler", "inversion", "load fewer frames"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert isinstance(caught.value, torch.OutOfMemoryError)  # ComfyUI's OOM handling still applies
    assert str(caught.value) == ("VideoGrainSampler input 'inversion': ran out of memory (CUDA out of memory. "
                                 "Tried to allocate 20.00 GiB). Fix: load fewer frames")


def test_other_errors_pass_through_unchanged():
    with pytest.raises(KeyError):
        with out_of_memory_hint("VideoGrainInvert", "latent", "fix"):
            raise KeyError("x")
