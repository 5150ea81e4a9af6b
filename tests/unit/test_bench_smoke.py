"""bench/attention_kernels.py runs at a tiny size on the CPU and prints every row (no timing asserts)."""
import json
import pathlib
import subprocess
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = PACK_DIR / "bench" / "attention_kernels.py"


def test_attention_bench_smoke_prints_all_rows():
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    assert "fast/floor" in header and "ref/fast" in header and "max|fast-ref|" in header
    # --smoke: 2 frames of 128x128 -> latent 16x16, modulated levels 8x8, 4x4, 2x2; self and cross each
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [(lvl, kind) for lvl in ("8x8", "4x4", "2x2")
                                             for kind in ("self", "cross")]
    assert [int(c[2]) for c in cells] == [128, 128, 32, 32, 8, 8]
    assert [int(c[3]) for c in cells] == [128, 77, 32, 77, 8, 77]
    assert [int(c[4]) for c in cells] == [80, 80, 160, 160, 160, 160]
    for c in cells:
        assert float(c[-1]) < 1e-4          # fast and reference agree in fp32 at every level
        assert float(c[9]) > 0 and float(c[10]) > 0


def test_edit_benchmark_smoke_prints_every_table(tmp_path):
    """bench/edit_benchmark.py end to end on the tiny model (CPU, toy size): all rows and both tables."""
    out = tmp_path / "edit.json"
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "edit_benchmark.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| floor step | reference step | fast step |" in proc.stdout
    assert "| whole edit, floor | whole edit, fast |" in proc.stdout
    [row] = json.loads(out.read_text())
    for name in ("floor", "reference", "fast"):
        assert row["step"][name]["seconds"] > 0
    assert row["reedit_fast"]["seconds"] > 0


def test_long_clip_benchmark_smoke_times_full_and_windowed_edits(tmp_path):
    """bench/long_clip_benchmark.py on the tiny model: both variants timed, seam figures finite."""
    out = tmp_path / "long.json"
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "long_clip_benchmark.py"), "--smoke",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| windowed/full |" in proc.stdout
    [row] = json.loads(out.read_text())
    assert row["windows"] == 2
    for name in ("full", "windowed"):
        assert row[name]["seconds"] > 0
        assert all(row[name][k] == row[name][k] for k in ("warp_error", "seam_flicker", "colour_drift"))


def test_frame_block_benchmark_smoke_checks_its_blocks():
    """bench/frame_blocks.py at a toy size: the recording attend agrees with the chunked accumulation."""
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "frame_blocks.py"), "--smoke"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = [line.split("|") for line in proc.stdout.splitlines() if line.strip().startswith("2 |")]
    assert float(row[6]) < 1e-5  # max |attend - add|
