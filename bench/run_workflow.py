"""Run a shipped API workflow through a real ComfyUI server; report wall time and peak GPU memory.

    python bench/run_workflow.py [WORKFLOW.json] [--frames N] [--steps N] [--size WxH] [--window W,O,A]
        [--attention windowed|full] [--set NODE.input=VALUE ...] [--ckpt FILE] [--cap-gib X[,Y...]]
        [--sweep F1,F2,...] [--modes full,windowed] [--extrapolate-steps 50] [--json OUT.json] [--smoke]

Every run is a fresh server process (`main.py` through bench/capped_main.py) in a work folder of its own
base directory: the pack linked into custom_nodes, the checkpoint linked into models/checkpoints (or a
random-weight SD1.5 made once with .ci/make_models.py --only full), and in input/videograin_demo/ the
bundled synthetic clip at the asked size and length (its 16 frames played forward and back, so both
figures stay in the frame at any length) with its region masks. The script POSTs the prompt, follows the
websocket (per-node and per-step times), polls /history, and reports:

- wall time from queueing to the result, and the server's own execution time;
- peak GPU memory two ways: torch's allocator peaks inside the server (max_memory_allocated, the figure
  bench/README.md's other tables use, and max_memory_reserved; written by capped_main.py --stats), with
  the node that was running when the allocated peak was reached (a VAE node there would mean the VAE,
  not the UNet, sets the workflow's peak); and what nvidia-smi saw for the server process (per-pid
  used_memory; if the container hides pids, the device's memory.used above its level before the
  start), which includes the CUDA context (~0.5 GiB);
- with --extrapolate-steps T: the time at T steps, measured time + (T − steps) × the steady time per step
  (median gap between progress ticks; the first step, which pays compiles, ends at the first tick and
  so is in no gap) of the inversion and of the edit. Steps ≥ 3 give the inversion the two ticks it needs.

--frames, --steps, --size and --window set the matching inputs of every node that has them; --set
NODE.input=VALUE (NODE an id or a class_type) wins over them. The inversion cache is switched off
(--keep-cache keeps the workflow's setting): a benchmark must not reuse an earlier run's inversion.

--cap-gib X starts the server as on a card of X GiB (torch's per-process memory fraction plus ComfyUI's
--reserve-vram; see bench/capped_main.py). --sweep F1,F2,... runs, for each mode of --modes (full = the
workflow with its VideoGrainTemporalWindows nodes bypassed) and each cap from small to large, the
lengths from short to long until the first failure (out of memory, or slower than --timeout); a larger
cap starts after the smaller cap's largest clip. It prints the frames-per-card table. --deadline-s
starts no run after that many seconds, to fit a sweep into a command's time limit.

--smoke: the CPU dev host (.host/ComfyUI unless --comfy, its venv's python, the tiny model), a 6-frame
clip at 64 px, 3 steps, windows 4/1/1, the windowed mode only (unless --modes), with the Python modules
the GPU machine lacks hidden (tests/unit/test_bench_run_workflow.py runs it).
"""
from __future__ import annotations

import argparse
import base64
import copy
import importlib.util
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PACK_DIR = BENCH.parent
CI = PACK_DIR / ".ci"
sys.path.insert(0, str(CI))

import comfy_server as cs  # noqa: E402  (.ci)

GIB = 2 ** 30
DEFAULT_WORKFLOW = PACK_DIR / "workflows" / "api" / "videograin_long_clip.json"
DEMO_VIDEO = "videograin_demo/clip.mp4"
LOOP_NODES = ("VideoGrainInvert", "VideoGrainSampler")  # their time grows with their steps input
WINDOWS_NODE = "VideoGrainTemporalWindows"
# What the GPU machine's image lacks (the lead installs av, torchsde and trampoline): --smoke hides these
# from the CPU server, so a dependency on one of them fails here first. ComfyUI runs without them: the
# frontend is replaced by a stub (--front-end-root), the database and a few comfy_extras nodes are skipped.
GPU_MISSING = ("comfyui_frontend_package", "comfyui_workflow_templates", "comfyui_embedded_docs", "alembic",
               "sqlalchemy", "pydantic", "pydantic_settings", "spandrel", "kornia", "websocket", "diffusers",
               "playwright")


def _load_ci_run_workflow():
    """.ci/run_workflow.py under another name (this file has the same basename)."""
    spec = importlib.util.spec_from_file_location("videograin_ci_run_workflow", CI / "run_workflow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ci_run = _load_ci_run_workflow()


# --- editing the prompt ------------------------------------------------------------------------------

def nodes_of(prompt: dict, target: str) -> list[str]:
    """Ids of the nodes `target` names: a node id, or every node of that class_type."""
    if target in prompt:
        return [target]
    return [k for k, n in prompt.items() if n["class_type"] == target]


def apply_sets(prompt: dict, items: list[str]) -> dict:
    """Apply `NODE.input=VALUE` (NODE: id or class_type; VALUE read as JSON when it parses): each class_type
    becomes its node ids, then .ci/run_workflow.py's `apply_overrides` checks and sets them."""
    by_id = []
    for item in items:
        target, sep, value = item.partition("=")
        node, dot, name = target.rpartition(".")
        ids = nodes_of(prompt, node) if sep and dot else []
        if not ids:
            known = ", ".join(f"{k} {n['class_type']}" for k, n in prompt.items())
            raise SystemExit(f"--set {item!r}: expected NODE.input=VALUE with NODE a node id or class_type of the "
                             f"workflow (nodes: {known})")
        by_id += [f"{k}.{name}={value}" for k in ids]
    return ci_run.apply_overrides(prompt, by_id)


def _set_all(prompt: dict, class_type: str, **values) -> int:
    """Set these inputs on every node of `class_type`, except inputs wired to another node."""
    count = 0
    for node in prompt.values():
        if node["class_type"] == class_type:
            for name, value in values.items():
                if not isinstance(node["inputs"].get(name), list):
                    node["inputs"][name] = value
            count += 1
    return count


def set_frames(prompt: dict, frames: int) -> None:
    """frame_load_cap of every video and mask loader (a mask loader wired to frame_count follows by itself)."""
    if not _set_all(prompt, "VideoGrainLoadVideo", frame_load_cap=frames):
        raise SystemExit("--frames: the workflow has no VideoGrainLoadVideo")
    _set_all(prompt, "VideoGrainLoadMasks", frame_load_cap=frames)


def set_steps(prompt: dict, steps: int) -> None:
    for kind in LOOP_NODES:
        _set_all(prompt, kind, steps=steps)


def set_size(prompt: dict, width: int, height: int) -> None:
    _set_all(prompt, "VideoGrainLoadVideo", width=width, height=height)


def set_windows(prompt: dict, window: int, overlap: int, anchors: int) -> None:
    if not _set_all(prompt, WINDOWS_NODE, window=window, overlap=overlap, anchors=anchors):
        raise SystemExit(f"--window: the workflow has no {WINDOWS_NODE}")


def full_attention(prompt: dict) -> dict:
    """The prompt with every VideoGrainTemporalWindows node bypassed: its consumers get its input model."""
    out = copy.deepcopy(prompt)
    for k in [k for k, n in out.items() if n["class_type"] == WINDOWS_NODE]:
        source = out.pop(k)["inputs"]["model"]
        for node in out.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value[0] == k:
                    node["inputs"][name] = list(source)
    return out


def has_windows(prompt: dict) -> bool:
    return any(n["class_type"] == WINDOWS_NODE for n in prompt.values())


def clip_length(prompt: dict) -> int:
    """Frames the demo clip must have: the largest frame_load_cap of the video loaders (0 = all: 16)."""
    caps = [n["inputs"].get("frame_load_cap", 0) for n in prompt.values() if n["class_type"] == "VideoGrainLoadVideo"]
    caps = [c for c in caps if isinstance(c, int)]
    return max([c for c in caps if c > 0], default=16)


def mask_regions(prompt: dict) -> list[str] | None:
    """Region names the workflow selects from the demo masks (None: not known, write all)."""
    names: set[str] = set()
    for node in prompt.values():
        if node["class_type"] == "VideoGrainSelectMask":
            value = node["inputs"].get("name")
            if not isinstance(value, str):
                return None
            names.update(n.strip() for n in value.split(",") if n.strip())
    return sorted(names) or None


# --- the clip -------------------------------------------------------------------------------------------

def ping_pong(frames: int, period: int) -> list[int]:
    """Source frame of each output frame: 0, 1, …, period−1, period−2, …, 1, 0, 1, … (no frame repeated at
    the turns), so the demo's figures walk to and fro and stay in the frame at any length."""
    if period < 2:
        return [0] * frames
    cycle = list(range(period)) + list(range(period - 2, 0, -1))
    return [cycle[f % len(cycle)] for f in range(frames)]


def write_clip(folder: Path, frames: int, width: int, height: int, regions: list[str] | None) -> None:
    """`folder/clip.mp4` and `folder/masks/<region>/*.png`: the synthetic demo at `width`x`height`, `frames` long."""
    import numpy as np
    import synthetic_clip

    clip = synthetic_clip.render_clip(synthetic_clip.FRAMES, width, height)
    order = np.array(ping_pong(frames, synthetic_clip.FRAMES))
    if folder.exists():
        shutil.rmtree(folder)
    synthetic_clip.write_mp4(clip.frames[order], folder / "clip.mp4", clip.fps)
    names = [r for r in (regions or clip.masks) if r in clip.masks] or list(clip.masks)
    synthetic_clip.write_masks({r: clip.masks[r][order] for r in names}, folder / "masks")


# --- memory from outside the server ---------------------------------------------------------------------

class SmiPoller(threading.Thread):
    """Polls nvidia-smi: the server pid's used_memory, and the device's memory.used above `baseline`, read
    when the poller is made: before the server starts, so that the CUDA context counts. Set `pid` before
    `start()`."""

    def __init__(self, gpu: str, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.gpu, self.interval = None, gpu, interval
        self.smi = shutil.which("nvidia-smi")
        self.baseline = self._device_used() if self.smi else None
        self.peak_pid_mib = 0
        self.peak_device_mib = 0
        self._halt = threading.Event()

    def _query(self, *args: str) -> list[str]:
        out = subprocess.run([self.smi, "-i", self.gpu, *args, "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def _device_used(self) -> int:
        return int(float(self._query("--query-gpu=memory.used")[0]))

    def run(self) -> None:
        while self.smi and not self._halt.is_set():
            try:
                for line in self._query("--query-compute-apps=pid,used_memory"):
                    pid, used = (v.strip() for v in line.split(","))
                    if pid.isdigit() and int(pid) == self.pid and used.replace(".", "").isdigit():
                        self.peak_pid_mib = max(self.peak_pid_mib, int(float(used)))
                self.peak_device_mib = max(self.peak_device_mib, self._device_used() - self.baseline)
            except (subprocess.SubprocessError, ValueError, IndexError, OSError):
                pass
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join(timeout=15)
        if not self.smi:
            return {"smi_peak_gib": None, "smi_method": "no nvidia-smi"}
        if self.peak_pid_mib:
            return {"smi_peak_gib": self.peak_pid_mib / 1024, "smi_method": "server pid"}
        return {"smi_peak_gib": self.peak_device_mib / 1024, "smi_method": "device above start (pids hidden)"}


# --- the websocket (stdlib: the GPU machine has no websocket-client) -----------------------------------

class EventLog(threading.Thread):
    """Reads the server's websocket messages and keeps (time, type, data) of the JSON ones."""

    def __init__(self, url: str, client_id: str):
        super().__init__(daemon=True)
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the websocket during the handshake")
            head += chunk
        head, self._buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")
        self.sock.settimeout(None)
        self.events: list[tuple[float, str, dict]] = []
        self.wall_offset = time.time() - time.monotonic()  # event times are monotonic; + this = wall clock

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # client frames are masked (RFC 6455)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + data)

    def run(self) -> None:
        message, kind = b"", 0
        try:
            while True:
                b0, b1 = self._read(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack(">H", self._read(2))[0]
                elif n == 127:
                    n = struct.unpack(">Q", self._read(8))[0]
                mask = self._read(4) if b1 & 0x80 else None
                payload = self._read(n)
                if mask:
                    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                opcode = b0 & 0x0F
                if opcode == 8:
                    return
                if opcode == 9:
                    self._send(10, payload[:125])
                    continue
                if opcode in (1, 2):
                    message, kind = payload, opcode
                elif opcode == 0:
                    message += payload
                if b0 & 0x80 and kind == 1:
                    msg = json.loads(message)
                    self.events.append((time.monotonic(), msg.get("type", ""), msg.get("data", {})))
        except (OSError, ConnectionError, ValueError):
            return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def node_times(events: list[tuple[float, str, dict]], prompt_id: str) -> dict[str, dict]:
    """Per node: seconds from its 'executing' message to the next, and its progress ticks' times."""
    mine = [(t, kind, d) for t, kind, d in events if d.get("prompt_id") == prompt_id]
    starts = [(t, d.get("node")) for t, kind, d in mine if kind == "executing"]
    out: dict[str, dict] = {}
    for (t0, node), (t1, _) in zip(starts, starts[1:]):
        if node is not None:
            out.setdefault(str(node), {"seconds": 0.0, "ticks": []})["seconds"] += t1 - t0
    for t, kind, d in mine:
        if kind == "progress" and d.get("node") is not None:
            out.setdefault(str(d["node"]), {"seconds": 0.0, "ticks": []})["ticks"].append((t, d["value"], d["max"]))
    for entry in out.values():
        ticks = [t for t, _, _ in entry["ticks"]]
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        # A tick comes at the end of each step, so the first step (which pays compiles) is in no gap.
        entry["steady_step_s"] = statistics.median(gaps) if gaps else None
        entry["ticks"] = len(ticks)
    return out


def node_at(events: list[tuple[float, str, dict]], prompt_id: str, t: float) -> str | None:
    """The node that was executing at (monotonic) time `t`, from the 'executing' messages."""
    current = None
    for when, kind, d in events:
        if d.get("prompt_id") == prompt_id and kind == "executing":
            if when > t:
                break
            current = d.get("node")
    return None if current is None else str(current)


def extrapolate(row: dict, prompt: dict, target_steps: int) -> float | None:
    """Time at `target_steps`: measured + (target − steps) × the steady step of every loop node."""
    extra = 0.0
    for k, n in prompt.items():
        if n["class_type"] in LOOP_NODES:
            step = row["nodes"].get(k, {}).get("steady_step_s")
            if step is None:
                return None
            extra += (target_steps - int(n["inputs"]["steps"])) * step
    return row["wall_s"] + extra


# --- one run ---------------------------------------------------------------------------------------------

class BenchServer(cs.ComfyServer):
    """ComfyUI's main.py started through bench/capped_main.py, with the bench's flags."""

    def __init__(self, host: cs.HostPaths, run_dir: Path, cap_gib: float | None, cpu: bool, hide: str,
                 front_end: Path, env: dict[str, str]):
        super().__init__(host, output_dir=run_dir / "output", temp_dir=run_dir / "temp",
                         log_path=run_dir / "comfyui.log", env=env)
        self.cap_gib, self.cpu, self.hide, self.front_end = cap_gib, cpu, hide, front_end
        self.stats_path = run_dir / "gpu_stats.json"

    def command(self) -> list[str]:
        cmd = [str(self.host.python), str(BENCH / "capped_main.py"), "--comfy", str(self.host.comfy_dir),
               "--stats", str(self.stats_path)]
        if self.cap_gib:
            cmd += ["--cap-gib", str(self.cap_gib)]
        if self.hide:
            cmd += ["--hide", self.hide]
        cmd += ["--", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch",
                "--disable-api-nodes", "--disable-cuda-malloc",  # torch's own allocator: the fraction and the stats
                "--base-directory", str(self.host.base_dir), "--output-directory", str(self.output_dir),
                "--temp-directory", str(self.temp_dir), "--database-url", "sqlite:///:memory:",
                "--front-end-root", str(self.front_end)]
        return cmd + (["--cpu"] if self.cpu else [])

    def import_failures(self) -> list[str]:
        """Custom node folders that failed to import; comfy_extras' own failures (the GPU image lacks e.g.
        kornia) are not the pack's and do not stop a measurement."""
        return [line.strip() for line in self.log_text().splitlines()
                if "IMPORT FAILED" in line and "custom_nodes" in line]


def _history(url: str, prompt_id: str) -> dict | None:
    return ci_run.get_json(url, f"/history/{prompt_id}").get(prompt_id)


def _error_of(entry: dict) -> dict | None:
    status = entry.get("status", {})
    if status.get("status_str") == "success":
        return None
    for name, data in status.get("messages", []):
        if name == "execution_error":
            text = f"{data.get('exception_type', '')}: {data.get('exception_message', '')}".strip()
            oom = "OutOfMemory" in data.get("exception_type", "") or "out of memory" in text.lower()
            return {"node": data.get("node_id"), "node_type": data.get("node_type"), "message": text[:600], "oom": oom}
    return {"node": None, "node_type": None, "message": f"status {status.get('status_str')!r}", "oom": False}


def _exec_seconds(entry: dict) -> float | None:
    stamps = {name: data.get("timestamp") for name, data in entry.get("status", {}).get("messages", [])}
    end = stamps.get("execution_success") or stamps.get("execution_error")
    return (end - stamps["execution_start"]) / 1000 if end and stamps.get("execution_start") else None


def run_once(setup: "Setup", prompt: dict, label: str, cap_gib: float | None, timeout: float) -> dict:
    """Start a server, run `prompt`, stop the server; the measured row."""
    run_dir = setup.work / "runs" / label
    if run_dir.exists():
        shutil.rmtree(run_dir)
    server = BenchServer(setup.host, run_dir, cap_gib, setup.cpu, setup.hide, setup.front_end,
                         env={"VIDEOGRAIN_CACHE_DIR": str(run_dir / "inversion_cache")})
    row: dict = {"label": label, "cap_gib": cap_gib, "log": str(server.log_path)}
    try:
        poller = SmiPoller(setup.gpu)  # the device's baseline before the server's CUDA context
        server.start(timeout=300)
        server.check_pack_loaded()
        poller.pid = server.proc.pid
        poller.start()
        client_id = uuid.uuid4().hex
        events = EventLog(server.url, client_id)
        events.start()
        t0 = time.monotonic()
        prompt_id = ci_run.queue(server.url, prompt, client_id)
        entry = None
        while entry is None:  # a prompt reaches /history when it has finished (or failed)
            if server.proc.poll() is not None:
                raise cs.ServerError(f"the server exited (code {server.proc.returncode}) during the run\n"
                                     + server.log_tail())
            if time.monotonic() - t0 > timeout:
                break  # too slow: reported as a failure that ends a sweep's series, with the peak so far
            time.sleep(0.25)
            entry = _history(server.url, prompt_id)
        row["wall_s"] = time.monotonic() - t0
        time.sleep(0.6)  # the stats thread writes every 0.25 s
        row.update(poller.stop())
        events.close()
        entry = entry or {}
        row["exec_s"] = _exec_seconds(entry)
        row["error"] = _error_of(entry) if entry else {
            "node": None, "node_type": None, "message": f"did not finish within {timeout:.0f} s (--timeout)",
            "oom": False, "timeout": True}
        row["nodes"] = node_times(events.events, prompt_id)
        stats = json.loads(server.stats_path.read_text()) if server.stats_path.is_file() else {}
        row["torch_peak_allocated_gib"] = stats["max_allocated"] / GIB if "max_allocated" in stats else None
        row["torch_peak_reserved_gib"] = stats["max_reserved"] / GIB if "max_reserved" in stats else None
        row["gpu"] = stats
        if stats.get("peak_time"):  # which node set the peak (the UNet's loops, or the VAE?)
            node = node_at(events.events, prompt_id, stats["peak_time"] - events.wall_offset)
            row["peak_node"] = node and f"{node} {prompt.get(node, {}).get('class_type', '')}"
        row["outputs"] = [str(server.output_dir / item.get("subfolder", "") / item["filename"])
                          for item in ci_run.output_items(entry)]
    finally:
        server.stop()
    return row


# --- setup -------------------------------------------------------------------------------------------

class Setup:
    """The work folder: base directory (pack, checkpoint, clip), front-end stub, and how to start servers."""

    def __init__(self, work: Path, comfy: Path, python: Path, ckpt: Path, cpu: bool, hide: str,
                 extra_nodes: list[Path]):
        self.work, self.cpu, self.hide = work, cpu, hide
        base = work / "base"
        for d in ("custom_nodes", "models/checkpoints", "input", "user"):
            (base / d).mkdir(parents=True, exist_ok=True)
        for link, target in [(base / "custom_nodes" / cs.PACK_NODE_DIR, PACK_DIR),
                             *[(base / "custom_nodes" / p.name, p) for p in extra_nodes],
                             (base / "models" / "checkpoints" / ckpt.name, ckpt)]:
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target.resolve())
        self.ckpt_name = ckpt.name
        self.front_end = work / "frontend_stub"
        self.front_end.mkdir(exist_ok=True)
        (self.front_end / "index.html").write_text("<!doctype html><title>videograin bench</title>\n")
        self.host = cs.HostPaths(comfy_dir=comfy.resolve(), base_dir=base, python=python)
        self.gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
        self.clip_written: tuple | None = None

    def ensure_clip(self, frames: int, width: int, height: int, regions: list[str] | None) -> None:
        want = (frames, width, height, tuple(regions or ()))
        if self.clip_written == want:
            return
        t0 = time.monotonic()
        write_clip(self.host.input_dir / "videograin_demo", frames, width, height, regions)
        print(f"[bench] wrote the synthetic clip: {frames} frames at {width}x{height} "
              f"({time.monotonic() - t0:.1f} s)", flush=True)
        self.clip_written = want


def make_checkpoint(python: Path, comfy: Path, folder: Path) -> Path:
    """The random-weight full-size SD1.5 from .ci/make_models.py (made once per work folder)."""
    path = folder / "videograin_random_sd15.safetensors"
    if not path.is_file():
        print(f"[bench] making the random-weight SD1.5 checkpoint in {folder} (about a minute)", flush=True)
        subprocess.run([str(python), str(CI / "make_models.py"), "--comfy", str(comfy), "--only", "full",
                        "--out", str(folder), "--skip-check"], check=True)
    return path


# --- output --------------------------------------------------------------------------------------------

def _gib(v) -> str:
    return "—" if v is None else f"{v:.2f}"


def describe(row: dict) -> str:
    if row.get("error"):
        err = row["error"]
        what = "OUT OF MEMORY" if err["oom"] else "TOO SLOW" if err.get("timeout") else "FAILED"
        return f"{row['label']}: {what} in node {err['node']} ({err['node_type']}): {err['message'][:300]}"
    est = f", est. {row['estimate_s']:.1f} s at {row['estimate_steps']} steps" if row.get("estimate_s") else ""
    at = f" in node {row['peak_node']}" if row.get("peak_node") else ""
    return (f"{row['label']}: {row['wall_s']:.1f} s wall (server {row['exec_s'] or 0:.1f} s){est}; peak torch "
            f"allocated {_gib(row['torch_peak_allocated_gib'])} GiB{at}, reserved "
            f"{_gib(row['torch_peak_reserved_gib'])} GiB; nvidia-smi {_gib(row['smi_peak_gib'])} GiB ({row['smi_method']})")


def _cap(cap: float | None) -> str:
    return "uncapped" if cap is None else f"{cap:g} GiB"


def table(series: list[dict]) -> str:
    """The frames-per-card table. A series' largest clip may have been measured under a smaller cap (a clip
    that completes on a smaller card completes on a larger one); the row says so."""
    lines = ["| card (cap) | attention | largest clip that completes | time at run steps | est. time at target "
             "steps | peak torch allocated / reserved | peak nvidia-smi | first failure |",
             "|---|---|---|---|---|---|---|---|"]
    for s in series:
        best, fail = s["largest"], s["first_failure"] or s.get("stopped") or "none tried"
        cap = _cap(s["cap_gib"])
        if best is None:
            lines.append(f"| {cap} | {s['mode']} | none of {s['tried']} | — | — | — | — | {fail} |")
            continue
        where = "" if best["cap_gib"] == s["cap_gib"] else f" (run at the {_cap(best['cap_gib'])} cap)"
        est = f"{best['estimate_s']:.0f} s ({best['estimate_steps']} steps)" if best.get("estimate_s") else "—"
        lines.append(f"| {cap} | {s['mode']} | {best['frames']} frames{where} | {best['wall_s']:.1f} s "
                     f"({best['steps']} steps) | {est} | {_gib(best['torch_peak_allocated_gib'])} / "
                     f"{_gib(best['torch_peak_reserved_gib'])} GiB | {_gib(best['smi_peak_gib'])} GiB | {fail} |")
    return "\n".join(lines)


def sweep_series(measure, sweep: list[int], caps: list, modes: list[str], deadline: float | None) -> list[dict]:
    """For each mode, caps from small to large: lengths from short to long until the first failure (out of
    memory, or slower than --timeout). A larger cap starts after the previous cap's largest clip (it completes
    there too), so a series costs one run per length plus one failing run per cap. Past `deadline`
    (time.monotonic()) no new run starts."""
    series = []
    for mode in modes:
        start, best = 0, None
        for cap in sorted(caps, key=lambda c: float("inf") if c is None else c):
            first_failure, stopped = None, None
            for frames in sweep[start:]:
                if deadline is not None and time.monotonic() > deadline:
                    stopped = f"not run: --deadline-s reached before {frames} frames"
                    break
                row = measure(frames, mode, cap)
                if row["error"] is None:
                    best, start = row, start + 1
                    continue
                if not (row["error"]["oom"] or row["error"].get("timeout")):
                    raise SystemExit(f"[bench] {describe(row)}\n(neither out of memory nor too slow: fix it "
                                     f"first; log {row['log']})")
                first_failure = f"{frames} frames ({'out of memory' if row['error']['oom'] else 'too slow'})"
                break
            series.append({"cap_gib": cap, "mode": mode, "largest": best, "first_failure": first_failure,
                           "stopped": stopped, "tried": ",".join(map(str, sweep))})
    return series


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow")
    ap.add_argument("--comfy", type=Path, default=PACK_DIR / ".device" / "ComfyUI")
    ap.add_argument("--python", type=Path, default=Path(sys.executable), help="python for the server")
    ap.add_argument("--ckpt", type=Path, help="checkpoint file (default: a random SD1.5 made once in --work)")
    ap.add_argument("--work", type=Path, help="work folder (default: a new temporary one)")
    ap.add_argument("--frames", type=int, help="clip length: frame_load_cap of the loaders")
    ap.add_argument("--steps", type=int, help="steps of VideoGrainInvert and VideoGrainSampler")
    ap.add_argument("--size", default="512x512", help="WxH of the synthetic clip and of the video loader's box")
    ap.add_argument("--window", help="W,O,A for VideoGrainTemporalWindows")
    ap.add_argument("--attention", choices=["windowed", "full"], default="windowed",
                    help="one run: as shipped (windowed) or with the temporal windows bypassed (full)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.input=VALUE")
    ap.add_argument("--keep-cache", action="store_true", help="keep the workflow's inversion-cache setting")
    ap.add_argument("--cap-gib", default="", help="cap(s) in GiB, comma-separated: run as on a card that size")
    ap.add_argument("--sweep", default="", help="frame counts to try for each cap and mode")
    ap.add_argument("--modes", default="full,windowed", help="sweep modes: full and/or windowed")
    ap.add_argument("--extrapolate-steps", type=int, help="also estimate the time at this many steps")
    ap.add_argument("--timeout", type=float, default=3600,
                    help="seconds per run; a slower run counts as a failure in a sweep (too slow)")
    ap.add_argument("--deadline-s", type=float,
                    help="start no new sweep run after this many seconds (fits a sweep into a time limit)")
    ap.add_argument("--json", type=Path, help="write every run's row here")
    ap.add_argument("--copy-outputs", type=Path, help="copy the output videos here")
    ap.add_argument("--smoke", action="store_true", help="CPU dev host, tiny model, toy size (see above)")
    args = ap.parse_args(argv)

    started = time.monotonic()
    prompt = ci_run.load_workflow(args.workflow)
    width, height = (int(v) for v in args.size.lower().split("x"))
    extra_nodes: list[Path] = []
    hide = ""
    cpu = args.smoke
    if args.smoke:
        host = cs.host_paths()
        if args.comfy == ap.get_default("comfy"):  # a --comfy given explicitly is kept (another ComfyUI tree)
            args.comfy = host.comfy_dir
        args.python = host.python
        args.ckpt = host.checkpoints_dir / cs.TINY_MODEL
        extra_nodes = [CI / "tiny_sd15"]
        hide = ",".join(GPU_MISSING)
        # One windowed run: two windows and an anchor (the path the GPU run takes); 3 steps give the
        # inversion two progress ticks, the least a steady step time (and so the estimate) needs.
        args.sweep = args.sweep or ("" if args.frames else "6")
        args.modes = "windowed" if args.modes == ap.get_default("modes") else args.modes
        args.steps, args.window = args.steps or 3, args.window or "4,1,1"
        args.extrapolate_steps = args.extrapolate_steps or 5
        args.sets = ["VideoGrainLoadVideo.width=64", "VideoGrainLoadVideo.height=64", *args.sets]
    if not (args.comfy / "main.py").is_file():
        raise SystemExit(f"no ComfyUI at {args.comfy} (give --comfy)")
    work = args.work or Path(tempfile.mkdtemp(prefix="videograin_run_workflow_"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = args.ckpt or make_checkpoint(args.python, args.comfy, work / "checkpoints")
    if not ckpt.is_file():
        raise SystemExit(f"no checkpoint file {ckpt}")
    setup = Setup(work, args.comfy, args.python, ckpt, cpu, hide, extra_nodes)

    set_size(prompt, width, height)
    if args.steps:
        set_steps(prompt, args.steps)
    if args.window:
        set_windows(prompt, *_ints(args.window))
    if not args.keep_cache:
        _set_all(prompt, "VideoGrainInvert", cache="off")
    _set_all(prompt, "CheckpointLoaderSimple", ckpt_name=setup.ckpt_name)
    apply_sets(copy.deepcopy(prompt), args.sets)  # fail fast on a bad --set

    caps: list[float | None] = [float(c) for c in args.cap_gib.split(",") if c.strip()] or [None]
    if cpu and caps != [None]:
        raise SystemExit("--cap-gib needs the GPU (not with --smoke)")
    sweep = sorted(set(_ints(args.sweep)))
    uses_demo = any(n["class_type"] == "VideoGrainLoadVideo" and n["inputs"].get("video") == DEMO_VIDEO
                    for n in prompt.values())

    def prepared(frames: int | None, mode: str) -> dict:
        p = copy.deepcopy(prompt)
        if frames:
            set_frames(p, frames)
        apply_sets(p, args.sets)
        return full_attention(p) if mode == "full" else p

    def measure(frames: int | None, mode: str, cap: float | None) -> dict:
        p = prepared(frames, mode)
        length = clip_length(p)
        if uses_demo:
            setup.ensure_clip(max([length, *sweep]), width, height, mask_regions(p))
        label = f"{'cap' + format(cap, 'g') if cap else 'uncapped'}_{mode}_{length}f"
        print(f"[bench] {label}: starting the server ({setup.work / 'runs' / label / 'comfyui.log'})", flush=True)
        row = run_once(setup, p, label, cap, args.timeout)
        steps = [int(n["inputs"]["steps"]) for n in p.values() if n["class_type"] in LOOP_NODES]
        row.update(frames=length, mode=mode, steps=max(steps, default=None), workflow=args.workflow.name)
        if args.extrapolate_steps and not row["error"]:
            row["estimate_s"], row["estimate_steps"] = extrapolate(row, p, args.extrapolate_steps), args.extrapolate_steps
        print(f"[bench] {describe(row)}", flush=True)
        rows.append(row)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2))
        if args.copy_outputs and not row["error"]:
            args.copy_outputs.mkdir(parents=True, exist_ok=True)
            for out in row["outputs"]:
                if Path(out).suffix in ci_run.VIDEO_SUFFIXES:
                    shutil.copy(out, args.copy_outputs / f"{label}_{Path(out).name}")
        return row

    rows: list[dict] = []
    if not sweep:
        row = measure(args.frames, args.attention, caps[0])
        for out in row.get("outputs", []):
            print(f"[bench] output: {out}")
        return 1 if row["error"] else 0

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "windowed" in modes and not has_windows(prompt):
        raise SystemExit(f"--modes windowed: {args.workflow.name} has no {WINDOWS_NODE}")
    deadline = started + args.deadline_s if args.deadline_s else None
    series = sweep_series(measure, sweep, caps, modes, deadline)
    print("\n" + table(series), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
