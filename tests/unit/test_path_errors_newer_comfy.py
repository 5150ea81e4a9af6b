"""Newer ComfyUI's folder_paths raises ValueError("Invalid file path") on path traversal; the pack's path
inputs still answer with their own message naming node, input and fix (issue 10 item 3)."""
import pathlib
import sys
import types

import pytest

if "videograin.nodes" not in sys.modules:  # skip nodes/__init__.py (it registers every node: needs ComfyUI)
    _pkg = types.ModuleType("videograin.nodes")
    _pkg.__path__ = [str(pathlib.Path(__file__).resolve().parents[2] / "nodes")]
    sys.modules["videograin.nodes"] = _pkg

from videograin.nodes import mask_nodes, utils, video_nodes  # noqa: E402
from videograin.nodes.errors import VideoGrainInputError  # noqa: E402


@pytest.fixture
def strict_folder_paths(monkeypatch):
    fake = types.ModuleType("folder_paths")

    def invalid():
        raise ValueError("Invalid file path")
    fake.get_input_directory = invalid
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.setenv(utils.CONFINE_ENV, "0")


def test_video_input_value_error_becomes_the_packs_message(strict_folder_paths):
    with pytest.raises(VideoGrainInputError) as caught:
        video_nodes.resolve_source("../../etc/passwd")
    assert str(caught.value).startswith("VideoGrainLoadVideo input 'video': Invalid file path. Fix: pick a video")


def test_masks_path_value_error_becomes_the_packs_message(strict_folder_paths):
    with pytest.raises(VideoGrainInputError) as caught:
        mask_nodes.resolve_masks_path("masks/../..")
    assert "VideoGrainLoadMasks input 'masks_path': Invalid file path" in str(caught.value)


def test_no_video_chosen_keeps_its_own_message(strict_folder_paths):
    with pytest.raises(VideoGrainInputError, match="no video is chosen"):
        video_nodes.resolve_source("")


def test_a_nul_byte_in_a_listed_value_is_a_path_error(monkeypatch, tmp_path):
    """os.path raises ValueError on a NUL byte: nodes.utils turns it into PathNotAllowed, which the node names."""
    fake = types.ModuleType("folder_paths")
    fake.get_input_directory = lambda: str(tmp_path)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    with pytest.raises(utils.PathNotAllowed, match="null byte"):
        utils.resolve_listed("clip\0.mp4")
    with pytest.raises(VideoGrainInputError, match="VideoGrainLoadVideo input 'video'"):
        video_nodes.resolve_source("clip\0.mp4")
