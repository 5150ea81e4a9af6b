"""Start and stop a real ComfyUI server for the tests and the demo (stdlib only).

Used by tests/server/conftest.py (imported by path) and by .ci/run_workflow.py:

    with ComfyServer(host_paths(), output_dir=tmp / "output") as server:
        print(server.url)

The server runs on the CPU on 127.0.0.1 and a free port, with the host's base directory (models,
custom_nodes, input) and its own output/temp folders. Its stdout and stderr go to a log file.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
PACK_NODE_DIR = "comfyui-videograin"  # the pack's link name in custom_nodes (see setup_host.sh)
FULL_MODEL = "videograin_random_sd15.safetensors"
TINY_MODEL = "videograin_tiny_sd15.safetensors"


class ServerError(RuntimeError):
    """The server did not start, or started without the pack; the message ends with its log."""


@dataclass(frozen=True)
class HostPaths:
    """Where the standalone host made by .ci/setup_host.sh lives."""

    comfy_dir: Path
    base_dir: Path
    python: Path

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def checkpoints_dir(self) -> Path:
        return self.base_dir / "models" / "checkpoints"

    def missing(self) -> list[str]:
        """What setup_host.sh has not made yet (empty when the host is usable)."""
        need = [self.comfy_dir / "main.py", self.python, self.base_dir / "custom_nodes" / PACK_NODE_DIR]
        return [str(p) for p in need if not p.exists()]


def host_paths(host_dir: str | os.PathLike | None = None) -> HostPaths:
    """Paths of the host in $VIDEOGRAIN_HOST (default <repo>/.host), as setup_host.sh lays it out."""
    host = Path(host_dir or os.environ.get("VIDEOGRAIN_HOST") or PACK_DIR / ".host")
    return HostPaths(comfy_dir=host / "ComfyUI", base_dir=host / "base", python=host / "venv" / "bin" / "python")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """One ComfyUI server process; `start()` returns once it answers GET /system_stats."""

    def __init__(self, host: HostPaths, output_dir: Path, temp_dir: Path | None = None,
                 log_path: Path | None = None, port: int | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self.host = host
        self.output_dir = Path(output_dir)
        self.temp_dir = Path(temp_dir) if temp_dir else self.output_dir.parent / "temp"
        self.log_path = Path(log_path) if log_path else self.output_dir.parent / "comfyui.log"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_args = tuple(extra_args)
        self.env = dict(env or {})  # added to the server's environment
        self.proc: subprocess.Popen | None = None

    @property
    def input_dir(self) -> Path:
        return self.host.input_dir

    def command(self) -> list[str]:
        return [str(self.host.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--disable-api-nodes", "--use-pytorch-cross-attention",
                "--base-directory", str(self.host.base_dir),
                "--output-directory", str(self.output_dir), "--temp-directory", str(self.temp_dir),
                # The default database lives in the ComfyUI tree (not writable there, and shared
                # between runs); 0.3.75 only uses it for optional asset bookkeeping.
                "--database-url", "sqlite:///:memory:",
                *self.extra_args]

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        missing = self.host.missing()
        if missing:
            raise ServerError(f"the ComfyUI host is not set up (missing {', '.join(missing)}). "
                              "Fix: run `bash .ci/setup_host.sh`")
        for d in (self.output_dir, self.temp_dir, self.log_path.parent):
            d.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "wb") as log:
            # Own process group: stop() can end the server and anything it spawned, and nothing else.
            self.proc = subprocess.Popen(self.command(), cwd=self.host.comfy_dir, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"ComfyUI exited with code {self.proc.returncode} while starting.\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (OSError, urllib.error.URLError, ValueError):
                time.sleep(0.25)
        self.stop()
        raise ServerError(f"ComfyUI did not answer within {timeout:.0f} s.\n{self.log_tail()}")

    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def import_failures(self) -> list[str]:
        """Log lines of custom node folders that failed to import."""
        return [line.strip() for line in self.log_text().splitlines() if "IMPORT FAILED" in line]

    def pack_node_ids(self) -> list[str]:
        """Ids of the nodes that /object_info lists as coming from the pack."""
        info = self.get_json("/object_info", timeout=60)
        module = f"custom_nodes.{PACK_NODE_DIR}"
        return sorted(k for k, v in info.items() if v.get("python_module") == module)

    def check_pack_loaded(self) -> list[str]:
        """Raise ServerError (with the log) unless every custom node folder imported and the pack
        registered nodes; returns the pack's node ids."""
        failed = self.import_failures()
        if failed:
            raise ServerError("custom nodes failed to import: " + "; ".join(failed) + f"\n{self.log_tail()}")
        ids = self.pack_node_ids()
        if not ids:
            raise ServerError(f"/object_info lists no node of custom_nodes.{PACK_NODE_DIR}\n{self.log_tail()}")
        return ids

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the server's process group, SIGKILL it if it is still there after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
