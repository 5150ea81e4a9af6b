"""bench/edit_benchmark.py --trajectory: the whole edit with trajectory attention beside the same edit without
it, on the tiny model (CPU, toy size; its numbers mean nothing)."""
import json
import pathlib
import subprocess
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def test_edit_benchmark_times_the_edit_with_and_without_trajectory_attention(tmp_path):
    out = tmp_path / "edit.json"
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "edit_benchmark.py"), "--smoke", "--parts", "edit",
                           "--edit-variants", "fast", "--trajectory", "synthetic",
                           "--trajectory-resolutions", "64+32", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| whole edit, fast | whole edit, fast + trajectory | traj/fast |" in proc.stdout
    [row] = json.loads(out.read_text())
    assert row["edit_fast"]["seconds"] > 0 and row["edit_traj"]["seconds"] > 0
    assert row["trajectory_cpu"]["resolutions"] == "64+32" and row["trajectory_cpu"]["flow_seconds"] > 0
