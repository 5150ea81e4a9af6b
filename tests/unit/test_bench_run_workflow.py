"""bench/run_workflow.py and bench/capped_main.py: the prompt edits, the memory-cap arithmetic, the timing
and table helpers, and --smoke end to end (a real CPU server started through capped_main.py with the
modules the GPU machine lacks hidden, the shipped long-clip workflow on the tiny model)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACK_DIR = Path(__file__).resolve().parents[2]
LONG_CLIP = PACK_DIR / "workflows" / "api" / "videograin_long_clip.json"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rw = _load("bench_run_workflow", PACK_DIR / "bench" / "run_workflow.py")
capped = _load("bench_capped_main", PACK_DIR / "bench" / "capped_main.py")
GIB = 2 ** 30


def long_clip() -> dict:
    return json.loads(LONG_CLIP.read_text())


def test_full_attention_bypasses_the_windows_node_and_rewires_its_consumers():
    prompt = long_clip()
    [windows] = [k for k, n in prompt.items() if n["class_type"] == "VideoGrainTemporalWindows"]
    consumers = [k for k, n in prompt.items() if ["30", 0] in n["inputs"].values()]
    assert windows == "30" and sorted(consumers) == ["5", "8"]  # inversion and ST-Layout share the windows
    full = rw.full_attention(prompt)
    assert "30" not in full and "30" in prompt  # the original is left alone
    assert full["5"]["inputs"]["model"] == full["8"]["inputs"]["model"] == ["1", 0]
    assert not any(isinstance(v, list) and v[0] == "30" for n in full.values() for v in n["inputs"].values())


def test_sets_by_id_and_by_class_and_the_convenience_edits():
    prompt = long_clip()
    rw.apply_sets(prompt, ["5.steps=7", "VideoGrainSampler.seed=3", "2.path=/x/y.mp4"])
    assert prompt["5"]["inputs"]["steps"] == 7 and prompt["10"]["inputs"]["seed"] == 3
    assert prompt["2"]["inputs"]["path"] == "/x/y.mp4"
    rw.set_frames(prompt, 128)
    rw.set_steps(prompt, 50)
    rw.set_windows(prompt, 8, 2, 1)
    assert prompt["2"]["inputs"]["frame_load_cap"] == 128
    assert prompt["6"]["inputs"]["frame_load_cap"] == ["2", 1]  # the mask loader follows frame_count
    assert prompt["5"]["inputs"]["steps"] == prompt["10"]["inputs"]["steps"] == 50
    assert (prompt["30"]["inputs"]["window"], prompt["30"]["inputs"]["overlap"], prompt["30"]["inputs"]["anchors"]) \
        == (8, 2, 1)
    assert rw.clip_length(prompt) == 128
    assert rw.mask_regions(prompt) == ["background", "left_figure", "right_figure"]
    for bad in ("5.nope=1", "99.steps=1", "steps=1"):
        with pytest.raises(SystemExit):
            rw.apply_sets(prompt, [bad])


def test_ping_pong_keeps_to_the_rendered_frames_without_repeating_at_the_turns():
    order = rw.ping_pong(40, 16)
    assert order[:16] == list(range(16)) and order[16:31] == list(range(14, -1, -1))
    assert order[31:40] == list(range(1, 10)) and max(order) == 15
    assert all(a != b for a, b in zip(order, order[1:]))


def test_cap_arithmetic_gives_comfyui_and_torch_the_same_card():
    total = int(143.0 * GIB)
    # ComfyUI plans with free − reserve: on an empty card, free = total, so it sees cap − 0.4 GiB (its default).
    reserve = capped.reserve_vram_gib(total, 8)
    assert reserve == pytest.approx(143.0 - 8 + 0.4)
    # torch: what the device holds already (the CUDA context) plus the allocator's limit is the cap.
    fraction = capped.allocator_fraction(total, int(0.5 * GIB), 8)
    assert fraction * total == pytest.approx(7.5 * GIB)
    with pytest.raises(ValueError):
        capped.reserve_vram_gib(total, 200)
    with pytest.raises(ValueError):
        capped.allocator_fraction(total, 9 * GIB, 8)


def test_the_cap_hook_limits_torch_to_the_card_and_writes_the_peaks(monkeypatch, tmp_path):
    """The CUDA branch of capped_main's hook, with torch.cuda's answers faked (this machine has no GPU)."""
    import time
    import types

    import torch

    calls = {}
    total, used = int(140 * GIB), int(0.5 * GIB)
    fake = {"mem_get_info": lambda d=None: (total - used, total), "get_device_name": lambda d=None: "Fake GPU",
            "set_per_process_memory_fraction": lambda f, d=None: calls.setdefault("fraction", (f, d)),
            "max_memory_allocated": lambda d=None: 3 * GIB, "max_memory_reserved": lambda d=None: 4 * GIB,
            "memory_reserved": lambda d=None: 2 * GIB}
    for name, fn in fake.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    device = torch.device("cuda", 0)
    mm = types.SimpleNamespace(get_torch_device=lambda: device, extra_reserved_memory=lambda: int(132.4 * GIB))
    stats = tmp_path / "stats.json"
    capped.STOP_STATS.clear()
    try:
        capped.make_hook(8.0, str(stats))(mm)
        deadline = time.monotonic() + 5
        while not stats.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        data = json.loads(stats.read_text())
    finally:
        capped.STOP_STATS.set()
        time.sleep(0.3)  # the thread's last loop ends before the fakes go
    fraction, dev = calls["fraction"]
    assert dev == device and fraction * total == pytest.approx(7.5 * GIB)  # 8 GiB less the context already held
    assert data["max_allocated"] == 3 * GIB and data["max_reserved"] == 4 * GIB and data["cap_gib"] == 8.0
    assert data["used_at_start"] == used and data["fraction"] == fraction and data["device"] == "Fake GPU"
    assert data["peak_time"] <= data["time"]  # when the allocated peak was first seen


def test_node_times_and_the_step_extrapolation():
    prompt = {"5": {"class_type": "VideoGrainInvert", "inputs": {"steps": 4}},
              "10": {"class_type": "VideoGrainSampler", "inputs": {"steps": 4}}}
    pid = "p"
    ev = [(0.0, "executing", {"node": "5", "prompt_id": pid})]
    ev += [(10.0 + 2 * i, "progress", {"node": "5", "value": i + 1, "max": 3, "prompt_id": pid}) for i in range(3)]
    ev += [(20.0, "executing", {"node": "10", "prompt_id": pid})]
    ev += [(25.0 + i, "progress", {"node": "10", "value": i + 1, "max": 4, "prompt_id": pid}) for i in range(4)]
    ev += [(30.0, "executing", {"node": None, "prompt_id": pid}), (31.0, "executing", {"node": "5", "prompt_id": "other"})]
    times = rw.node_times(ev, pid)
    assert (rw.node_at(ev, pid, 15.0), rw.node_at(ev, pid, 26.0), rw.node_at(ev, pid, -1.0)) == ("5", "10", None)
    assert rw.node_at(ev, pid, 40.0) is None  # after the last node: the prompt is done
    assert times["5"]["seconds"] == 20.0 and times["10"]["seconds"] == 10.0
    assert times["5"]["steady_step_s"] == 2.0 and times["10"]["steady_step_s"] == 1.0
    row = {"wall_s": 30.0, "nodes": times}
    assert rw.extrapolate(row, prompt, 50) == pytest.approx(30.0 + 46 * 2.0 + 46 * 1.0)
    times["5"]["steady_step_s"] = None
    assert rw.extrapolate(row, prompt, 50) is None


def _row(frames, cap, mode, error=None):
    return {"frames": frames, "cap_gib": cap, "mode": mode, "error": error, "wall_s": frames / 2, "steps": 10,
            "estimate_s": frames * 2.5, "estimate_steps": 50, "torch_peak_allocated_gib": frames / 10,
            "torch_peak_reserved_gib": frames / 10 + 0.5, "smi_peak_gib": frames / 10 + 1, "log": "x"}


def test_the_sweep_climbs_each_cap_from_the_last_one_and_the_table_says_where_a_row_was_run():
    runs = []

    def measure(frames, mode, cap):  # windows need 0.1 GiB a frame, full 0.15; 96 frames of full are too slow
        runs.append((mode, cap, frames))
        need = frames * (0.1 if mode == "windowed" else 0.15)
        if mode == "full" and frames >= 96:
            return _row(frames, cap, mode, {"oom": False, "timeout": True, "message": "slow", "node": None,
                                            "node_type": None})
        if need > cap:
            return _row(frames, cap, mode, {"oom": True, "message": "CUDA out of memory", "node": "5",
                                            "node_type": "VideoGrainInvert"})
        return _row(frames, cap, mode)

    series = rw.sweep_series(measure, [32, 64, 96, 128], [12.0, 8.0], ["windowed", "full"], None)
    # windowed: 8 GiB takes 32 and 64, fails at 96; 12 GiB starts at 96 (passes), fails at 128.
    # full: 8 GiB takes 32, fails (out of memory) at 64; 12 GiB takes 64, 96 is too slow.
    assert runs == [("windowed", 8.0, 32), ("windowed", 8.0, 64), ("windowed", 8.0, 96), ("windowed", 12.0, 96),
                    ("windowed", 12.0, 128), ("full", 8.0, 32), ("full", 8.0, 64), ("full", 12.0, 64),
                    ("full", 12.0, 96)]
    assert [(s["cap_gib"], s["mode"], s["largest"]["frames"], s["first_failure"]) for s in series] == [
        (8.0, "windowed", 64, "96 frames (out of memory)"), (12.0, "windowed", 96, "128 frames (out of memory)"),
        (8.0, "full", 32, "64 frames (out of memory)"), (12.0, "full", 64, "96 frames (too slow)")]
    lines = rw.table(series).splitlines()
    assert lines[2] == ("| 8 GiB | windowed | 64 frames | 32.0 s (10 steps) | 160 s (50 steps) | 6.40 / 6.90 GiB | "
                        "7.40 GiB | 96 frames (out of memory) |")
    # A cap whose first new length fails keeps the smaller cap's clip, and says where it was run.
    series = rw.sweep_series(measure, [32, 64], [8.0, 7.0], ["full"], None)
    assert series[1]["largest"]["frames"] == 32 and series[1]["largest"]["cap_gib"] == 7.0
    text = rw.table(rw.sweep_series(measure, [32, 48, 64], [6.5, 7.0], ["full"], None))
    assert "| 7 GiB | full | 32 frames (run at the 6.5 GiB cap) |" in text
    assert rw.table(rw.sweep_series(measure, [32], [8.0], ["windowed"], 0.0)).splitlines()[2].endswith(
        "| not run: --deadline-s reached before 32 frames |")


def test_oom_errors_are_told_from_other_errors():
    def entry(kind, message):
        return {"status": {"status_str": "error", "messages": [["execution_error", {
            "node_id": "10", "node_type": "VideoGrainSampler", "exception_type": kind, "exception_message": message}]]}}
    assert rw._error_of(entry("torch.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2 GiB"))["oom"]
    assert rw._error_of(entry("nodes.errors.VideoGrainOutOfMemory", "ran out of memory (x)"))["oom"]
    assert not rw._error_of(entry("ValueError", "bad input"))["oom"]
    assert rw._error_of({"status": {"status_str": "success", "messages": []}}) is None


def test_smoke_runs_the_long_clip_workflow_through_a_real_server(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "run_workflow.py"), "--smoke", "--work",
                           str(tmp_path / "work"), "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| uncapped | windowed | 6 frames | " in proc.stdout
    [row] = json.loads(out.read_text())
    assert row["error"] is None and row["frames"] == 6 and row["mode"] == "windowed" and row["steps"] == 3
    assert row["gpu"] == {"device": "cpu"} and row["smi_method"] == "no nvidia-smi"
    assert row["nodes"]["5"]["ticks"] == 2 and row["nodes"]["10"]["ticks"] == 3  # inversion 2, edit 3 steps
    assert row["estimate_steps"] == 5 and row["estimate_s"] > row["wall_s"] > 0
    [video] = [p for p in row["outputs"] if p.endswith(".mp4")]
    import av

    with av.open(video) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape[:2] == (64, 64)
    # The server ran through the launcher with the GPU machine's missing modules hidden (run_once refuses a
    # server whose custom nodes failed to import, so the pack loaded without them).
    assert "hidden by bench/capped_main.py --hide" in Path(row["log"]).read_text()
