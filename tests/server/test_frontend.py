"""The shipped UI workflows in ComfyUI's real frontend (headless Chromium through Playwright).

For each UI workflow: the pack's node types are registered in the browser, the graph loads with every
node known, and the prompt the frontend builds from it (`app.graphToPrompt()`) equals the API twin.
Needs Debian's chromium (`.ci/test.sh` installs it) and the playwright package (no browser download).

Every test runs twice: against the host's frontend (comfyui-frontend-package 1.32.9, what ComfyUI 0.3.75
requires) and against the newer pinned release that `.ci/setup_host.sh --test-extras` (run by `.ci/test.sh`) installs into
`<host>/frontend-new`, served by a second server with `--front-end-root`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parents[2]
UI_FILES = sorted((PACK_DIR / "workflows").glob("*.json"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


def _unavailable(message: str):
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module", params=["host", "newest"])
def frontend_server(request, comfy_server, server_module, host_paths, tmp_path_factory):
    """The server whose frontend is tested: the session server (host frontend) or one serving the newer one."""
    if request.param == "host":
        yield comfy_server
        return
    static = host_paths.comfy_dir.parent / "frontend-new" / "comfyui_frontend_package" / "static"
    if not (static / "index.html").is_file():
        _unavailable(f"the newer frontend is not installed at {static} (bash .ci/setup_host.sh --test-extras installs it; .ci/test.sh runs that)")
    root = tmp_path_factory.mktemp("comfy_newest_frontend")
    server = server_module.ComfyServer(host_paths, output_dir=root / "output", temp_dir=root / "temp",
                                       log_path=root / "comfyui.log", extra_args=("--front-end-root", str(static)),
                                       env={"VIDEOGRAIN_CACHE_DIR": str(root / "inversion_cache")})
    try:
        server.start()
        server.check_pack_loaded()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(frontend_server):
    if CHROMIUM is None or not _has_playwright():
        _unavailable("chromium and the playwright package are needed (bash .ci/test.sh installs both)")
    from playwright.sync_api import sync_playwright

    comfy_client_settings(frontend_server.url)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(frontend_server.url)
        page.wait_for_function("window.app?.graph && Object.keys(window.LiteGraph?.registered_node_types ?? {})"
                               ".length > 0", timeout=120_000)
        yield page
        browser.close()


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def comfy_client_settings(url: str) -> None:
    """Skip the first-run tutorial so no dialog covers the canvas."""
    import urllib.request

    req = urllib.request.Request(url + "/api/settings", data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


def test_the_intended_frontend_is_served(page, frontend_server):
    version = page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ ?? ''")
    newest = "frontend-new" in frontend_server.log_text()  # "[Prompt Server] web root: ..."
    expected = (frontend_server.host.comfy_dir.parent / "frontend-new" / ".version").read_text().strip() \
        if newest else "1.32.9"
    assert version == expected


def test_every_pack_node_is_registered_in_the_browser(page, comfy):
    ours = sorted(k for k, v in comfy.object_info().items() if v.get("category", "").startswith("VideoGrain"))
    registered = page.evaluate("Object.keys(LiteGraph.registered_node_types)")
    assert ours and set(ours) <= set(registered)


@pytest.mark.parametrize("ui_file", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_loads_and_builds_its_api_twin(page, ui_file, tmp_path):
    ui = json.loads(ui_file.read_text())
    api = json.loads((PACK_DIR / "workflows" / "api" / ui_file.name).read_text())
    page.evaluate("async (g) => { await app.loadGraphData(g); }", ui)
    # `graph.nodes` in newer frontends, `graph._nodes` in 1.32
    loaded = page.evaluate("(app.graph.nodes ?? app.graph._nodes).map(n => "
                           "[String(n.id), n.type, !!LiteGraph.registered_node_types[n.type]])")
    assert sorted(loaded) == sorted([k, v["class_type"], True] for k, v in api.items())
    output = page.evaluate("async () => (await app.graphToPrompt()).output")
    # A combo with video_upload (VideoGrainLoadVideo) gets a DOM preview widget, "video-preview", once the
    # browser has loaded the video, so whether the prompt carries it ('') depends on timing. The server
    # drops inputs a node does not declare (execution.get_input_data), so it is not part of the prompt.
    for node in output.values():
        node["inputs"].pop("video-preview", None)
    assert {k: v["inputs"] for k, v in output.items()} == {k: v["inputs"] for k, v in api.items()}
    page.screenshot(path=str(tmp_path / f"{ui_file.stem}.png"))
