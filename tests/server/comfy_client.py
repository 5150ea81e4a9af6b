"""Small HTTP/websocket client for API-format workflows on the test server.

Use the `comfy` fixture (a ComfyClient bound to the session's server), or the module functions
below, which call the client of the running session:

    outputs = comfy.run(prompt)                  # raises ComfyRunError if the run failed
    message = comfy.run_expect_error(bad_prompt)  # validation (HTTP 400) or run-time error text
    paths = comfy.output_files(outputs)           # files the output nodes wrote
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


class ComfyPromptError(RuntimeError):
    """POST /prompt refused the prompt (HTTP 400); `node_errors` maps node id -> its errors."""

    def __init__(self, body: dict):
        self.body = body
        self.error = body.get("error", {})
        self.node_errors = body.get("node_errors", {})
        super().__init__(describe_prompt_error(body))


class ComfyRunError(RuntimeError):
    """The prompt was accepted but failed (or was interrupted) while it ran."""

    def __init__(self, history_entry: dict):
        self.history_entry = history_entry
        self.execution_error = find_message(history_entry, "execution_error") or {}
        self.interrupted = find_message(history_entry, "execution_interrupted") is not None
        super().__init__(describe_run_error(history_entry))


def find_message(history_entry: dict, name: str) -> dict | None:
    """Data of the first status message called `name` in a history entry (None if absent)."""
    for msg_name, data in history_entry.get("status", {}).get("messages", []):
        if msg_name == name:
            return data
    return None


def describe_prompt_error(body: dict) -> str:
    """One text with the top-level error and every node error, details included (custom
    VALIDATE_INPUTS messages arrive in `details`)."""
    err = body.get("error", {})
    parts = [f"{err.get('message', 'prompt refused')}: {err.get('details', '')}".rstrip(": ")]
    for node_id, entry in body.get("node_errors", {}).items():
        for e in entry.get("errors", []):
            parts.append(f"node {node_id} ({entry.get('class_type')}): {e.get('message')}: {e.get('details', '')}")
    return " | ".join(parts)


def describe_run_error(history_entry: dict) -> str:
    err = find_message(history_entry, "execution_error")
    if err is not None:
        return (f"node {err.get('node_id')} ({err.get('node_type')}) raised "
                f"{err.get('exception_type')}: {err.get('exception_message', '').strip()}")
    if find_message(history_entry, "execution_interrupted") is not None:
        return "the run was interrupted"
    return f"the run ended with status {history_entry.get('status', {}).get('status_str')!r}"


class ComfyClient:
    """Talks to one ComfyUI server; `output_dir`/`temp_dir` let it map outputs to local paths."""

    def __init__(self, url: str, output_dir: Path | None = None, temp_dir: Path | None = None):
        self.url = url.rstrip("/")
        self.output_dir = Path(output_dir) if output_dir else None
        self.temp_dir = Path(temp_dir) if temp_dir else None
        self.client_id = uuid.uuid4().hex
        self.warnings: list[dict] = []  # the pack's UI warnings of the last run_with_progress

    # --- HTTP -------------------------------------------------------------------------------------
    def _request(self, path: str, body: dict | None = None, timeout: float = 60):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def object_info(self, node_id: str | None = None) -> dict:
        """GET /object_info (all node schemas), or the schema of one node id."""
        if node_id is None:
            return self._request("/object_info")
        return self._request(f"/object_info/{node_id}")[node_id]

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        """POST the prompt; returns its prompt_id. Raises ComfyPromptError on HTTP 400."""
        try:
            reply = self._request("/prompt", {"prompt": prompt, "client_id": client_id or self.client_id})
        except urllib.error.HTTPError as e:
            if e.code != 400:
                raise
            raise ComfyPromptError(json.loads(e.read() or b"{}")) from None
        return reply["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self._request(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300) -> dict:
        """Poll /history until the prompt finished (success, error or interrupt); its entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and (entry.get("status", {}).get("completed")
                                      or entry.get("status", {}).get("status_str") == "error"):
                return entry
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run_entry(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue, wait and return the history entry; raises ComfyRunError unless it succeeded."""
        entry = self.wait(self.queue(prompt), timeout)
        if entry.get("status", {}).get("status_str") != "success":
            raise ComfyRunError(entry)
        return entry

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue, wait; returns the outputs (node id -> ui dict). Raises on any failure."""
        return self.run_entry(prompt, timeout)["outputs"]

    def run_expect_error(self, prompt: dict, timeout: float = 300) -> str:
        """The error text of a prompt that must fail, at validation or while running.
        Raises AssertionError if it succeeds."""
        try:
            self.run_entry(prompt, timeout)
        except (ComfyPromptError, ComfyRunError) as e:
            return str(e)
        raise AssertionError("the prompt was expected to fail but ran successfully")

    def interrupt(self) -> None:
        """POST /interrupt: stops the prompt that is running now."""
        self._request("/interrupt", {})

    def free(self) -> None:
        """POST /free: unload models and free memory (between heavy tests)."""
        self._request("/free", {"unload_models": True, "free_memory": True})

    # --- outputs ----------------------------------------------------------------------------------
    def output_files(self, result: dict) -> list[Path]:
        """Local paths of every file listed by output nodes (SaveImage's "images", video "gifs" or
        "videos", ...). `result`: a history entry, its outputs (node id -> ui dict, taken in node
        id order) or one node's ui dict."""
        outputs = result.get("outputs", result)
        if all(isinstance(v, list) for v in outputs.values()):
            uis = [outputs]  # one node's ui dict
        else:
            uis = [outputs[k] for k in sorted(outputs, key=lambda k: (len(k), k))]
        roots = {"output": self.output_dir, "temp": self.temp_dir}
        paths = []
        for ui in uis:
            for items in ui.values():
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict) and "filename" in item:
                        root = roots.get(item.get("type", "output"))
                        if root is None:
                            raise ValueError(f"no local folder known for output type {item.get('type')!r}")
                        paths.append(root / item.get("subfolder", "") / item["filename"])
        return paths

    # --- websocket --------------------------------------------------------------------------------
    def run_with_progress(self, prompt: dict, timeout: float = 300, check: bool = True) -> tuple[dict, list[dict]]:
        """Run a prompt while listening on the websocket; returns (history entry, the `progress`
        messages' data for this prompt, in order). The pack's `videograin.warning` events of the run
        land in `self.warnings`. Raises like run() on failure (unless `check` is False)."""
        import websocket  # websocket-client

        client_id = uuid.uuid4().hex
        ws_url = self.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"
        ws = websocket.create_connection(ws_url, timeout=timeout)
        progress: list[dict] = []
        self.warnings = []
        try:
            prompt_id = self.queue(prompt, client_id=client_id)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                raw = ws.recv()
                if not isinstance(raw, str):
                    continue  # binary frames are previews
                msg = json.loads(raw)
                data = msg.get("data", {})
                if msg["type"] == "videograin.warning":
                    self.warnings.append(data)
                    continue
                if data.get("prompt_id") != prompt_id:
                    continue
                if msg["type"] == "progress":
                    progress.append(data)
                elif msg["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                    break
                elif msg["type"] == "executing" and data.get("node") is None:
                    break
        finally:
            ws.close()
        entry = self.wait(prompt_id, timeout=30)
        if check and entry.get("status", {}).get("status_str") != "success":
            raise ComfyRunError(entry)
        return entry, progress


# --- module-level helpers: the client of the running test session (set by the comfy_server fixture)
_session_client: ComfyClient | None = None


def use(client: ComfyClient | None) -> None:
    global _session_client
    _session_client = client


def _client() -> ComfyClient:
    if _session_client is None:
        raise RuntimeError("no test server: request the `comfy_server` or `comfy` fixture first")
    return _session_client


def queue(prompt: dict) -> str:
    return _client().queue(prompt)


def wait(prompt_id: str, timeout: float = 300) -> dict:
    return _client().wait(prompt_id, timeout)


def run(prompt: dict, timeout: float = 300) -> dict:
    return _client().run(prompt, timeout)


def run_expect_error(prompt: dict, timeout: float = 300) -> str:
    return _client().run_expect_error(prompt, timeout)


def object_info(node_id: str | None = None) -> dict:
    return _client().object_info(node_id)


def interrupt() -> None:
    _client().interrupt()


def output_files(history_or_outputs: dict) -> list[Path]:
    return _client().output_files(history_or_outputs)


def run_with_progress(prompt: dict, timeout: float = 300) -> tuple[dict, list[dict]]:
    return _client().run_with_progress(prompt, timeout)
