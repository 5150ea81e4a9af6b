"""bench/compile_stall.py in --smoke mode (CPU, toy sizes): both processes run and every level is timed."""
import json
import subprocess
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]


def test_compile_stall_smoke_times_grouped_and_floor_in_both_processes(tmp_path):
    out = tmp_path / "stall.json"
    run = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "compile_stall.py"), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| run | level | tokens |" in run.stdout
    runs = json.loads(out.read_text())
    assert set(runs) == {"fresh", "restart"}
    for run_ in runs.values():
        assert list(run_["levels"]) == ["32x32", "16x16", "8x8"]
        for row in run_["levels"].values():
            assert row["grouped_warm"] > 0 and row["floor_warm"] > 0 and "flex_first" not in row


def test_floor_attention_smoke_times_every_level_and_backend(tmp_path):
    out = tmp_path / "floor.json"
    run = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "floor_attention.py"), "--smoke", "--repeats", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [(r["level"], r["batch"]) for r in rows] == [(lvl, b) for lvl in ("64x64", "32x32", "16x16", "8x8")
                                                        for b in (1, 2)]
    for r in rows:
        assert r["default"]["max_diff"] == 0.0 and r["math"]["max_diff"] < 1e-4 and r["math"]["seconds"] > 0
