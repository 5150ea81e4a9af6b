"""Session fixtures for tests against a real ComfyUI server with the pack loaded.

- `comfy_server`: the running server (`.url`, `.output_dir`, `.input_dir`, `.temp_dir`,
  `.log_path`, `.log_tail()`), started once per session on a free port, stopped at the end.
- `comfy`: a `comfy_client.ComfyClient` bound to it (also installed as the module default, so
  `comfy_client.run(prompt)` works in tests that requested `comfy_server`).
- `tiny_model` / `full_model`: checkpoint names for CheckpointLoaderSimple (files checked);
  `peaked_model`: the tiny model with informative (peaked) cross-attention.
- `host_paths` (ComfyUI tree, base dir, python), `server_module` (.ci/comfy_server.py).

The host comes from .ci/setup_host.sh ($VIDEOGRAIN_HOST or <repo>/.host); output and temp folders
are per session, the input folder is the host's (bundled assets are found there).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_client  # noqa: E402
import comfy_server as comfy_server_module  # noqa: E402 (.ci is on sys.path: tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]




@pytest.fixture(scope="session")
def server_module():
    """.ci/comfy_server.py (ComfyServer, ServerError, host_paths, model names)."""
    return comfy_server_module


@pytest.fixture(scope="session")
def host_paths():
    return comfy_server_module.host_paths()


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, host_paths):
    """The real ComfyUI server with the pack (fails with the server log if the pack did not load)."""
    root = tmp_path_factory.mktemp("comfy")
    server = comfy_server_module.ComfyServer(host_paths, output_dir=root / "output", temp_dir=root / "temp",
                                             log_path=root / "comfyui.log",
                                             # A per-session inversion cache: hits from earlier sessions
                                             # would hide the inversion from tests that watch it run.
                                             env={"VIDEOGRAIN_CACHE_DIR": str(root / "inversion_cache")})
    server.cache_dir = root / "inversion_cache"
    try:
        server.start()
        server.check_pack_loaded()
    except comfy_server_module.ServerError as e:
        server.stop()
        pytest.fail(str(e), pytrace=False)
    comfy_client.use(comfy_client.ComfyClient(server.url, server.output_dir, server.temp_dir))
    try:
        yield server
    finally:
        comfy_client.use(None)
        server.stop()


@pytest.fixture(scope="session")
def comfy(comfy_server) -> comfy_client.ComfyClient:
    return comfy_client.ComfyClient(comfy_server.url, comfy_server.output_dir, comfy_server.temp_dir)


def _checkpoint(host_paths, name: str) -> str:
    path = host_paths.checkpoints_dir / name
    if not path.is_file():
        pytest.fail(f"{path} is missing. Fix: run `bash .ci/setup_host.sh` (it writes the test checkpoints)",
                    pytrace=False)
    return name


@pytest.fixture(scope="session")
def tiny_model(host_paths) -> str:
    """Name of the tiny SD1.5-layout checkpoint (fast; needs the dev host's tiny_sd15 module)."""
    return _checkpoint(host_paths, comfy_server_module.TINY_MODEL)


@pytest.fixture(scope="session")
def full_model(host_paths) -> str:
    """Name of the full-size random-weight SD1.5 checkpoint (exact architecture; slow on CPU)."""
    return _checkpoint(host_paths, comfy_server_module.FULL_MODEL)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log's tail to failing server tests."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        # funcargs holds every fixture of the item's closure, so `comfy` users get the log too.
        server = getattr(item, "funcargs", {}).get("comfy_server")
        if server is not None:
            report.sections.append(("ComfyUI server log", server.log_tail(40)))


@pytest.fixture(scope="session")
def peaked_model(host_paths, tiny_model):
    """The tiny checkpoint with its cross-attention query/key weights ×4 (scores ×16): a model whose
    attention is informative.

    Random weights give near-uniform cross-attention (row max − min ≈ 0.1), so no modulation can
    move much mass: ST-Layout moves scores by w·(M − m). Trained SD1.5 has peaked text attention;
    this copy restores a realistic score spread without training. Written next to the test models
    under a per-process name and removed afterwards.
    """
    import os

    from safetensors.torch import load_file, save_file

    target = host_paths.checkpoints_dir / f"videograin_tiny_sd15_peaked_{os.getpid()}.safetensors"
    sd = load_file(str(host_paths.checkpoints_dir / tiny_model))
    for key in sd:
        if ".attn2.to_q." in key or ".attn2.to_k." in key:
            sd[key] = sd[key] * 4
    save_file(sd, str(target))
    yield target.name
    target.unlink(missing_ok=True)
