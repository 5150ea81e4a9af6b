"""bench/edit_benchmark.py --trajectory: the whole edit with trajectory attention beside the same edit without
it, on the tiny model (CPU, toy size; its numbers mean nothing); bench/trajectory_kernel.py on tiny tensors."""
import json
import math
import pathlib
import subprocess
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def test_edit_benchmark_times_the_edit_with_and_without_trajectory_attention(tmp_path):
    out = tmp_path / "edit.json"
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "edit_benchmark.py"), "--smoke", "--parts", "edit",
                           "--edit-variants", "fast", "--trajectory", "synthetic",
                           "--trajectory-resolutions", "64+32", "--trajectory-gather", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| whole edit, fast | whole edit, fast + trajectory | traj/fast |" in proc.stdout
    [row] = json.loads(out.read_text())
    assert row["edit_fast"]["seconds"] > 0 and row["edit_traj"]["seconds"] > 0
    assert row["trajectory_cpu"]["resolutions"] == "64+32" and row["trajectory_cpu"]["flow_seconds"] > 0
    assert "| Warp-Err fast | Warp-Err fast + trajectory |" in proc.stdout
    warp = row["warp_error"]
    assert math.isfinite(warp["fast"]) and math.isfinite(warp["traj"]) and warp["fast"] >= 0 and warp["traj"] >= 0
    assert warp["fast"] != warp["traj"]  # the trajectory attention changed the decoded edit
    # the old per-slot gather route, forced, gives the same edit up to fp32 rounding
    assert row["edit_traj_gather"]["seconds"] > 0 and "| + trajectory, gather route | gather/fast |" in proc.stdout
    assert math.isclose(warp["traj_gather"], warp["traj"], rel_tol=1e-3)


def test_trajectory_kernel_bench_smoke_times_every_route_and_checks_them(tmp_path):
    out = tmp_path / "kernel.json"
    script = PACK_DIR / "bench" / "trajectory_kernel.py"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| B | tokens | spacetime ms / MiB | gather ms / MiB | grouped_sdpa ms / MiB | grouped_matmul ms / MiB |" \
        in proc.stdout
    rows = json.loads(out.read_text())
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["tokens"] == 4 * 16 * 16 and r["dtype"] == "fp16" and 0 < r["fill"] <= 1
        for name in ("spacetime", "gather", "grouped_sdpa", "grouped_matmul"):
            assert r[name]["ms"] > 0
        for name in ("grouped_sdpa", "grouped_matmul"):  # fp16 outputs: within a rounding step of the gather route
            assert r[name]["max_abs_diff_vs_gather"] < 1e-2
