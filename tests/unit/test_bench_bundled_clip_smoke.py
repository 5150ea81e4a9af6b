"""bench/bundled_clip_edit.py in --smoke mode: the bundled clip and masks through the trajectory and PnP
variants on the tiny model (CPU), every figure finite and the PnP features counted."""
import json
import math
import subprocess
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[2]


def test_bundled_clip_bench_smoke_runs_the_trajectory_and_pnp_variants(tmp_path):
    out = tmp_path / "bundled.json"
    run = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "bundled_clip_edit.py"), "--smoke",
                          "--variants", "traj,pnp", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| variant | whole edit |" in run.stdout
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"traj", "pnp"}
    for row in rows.values():
        assert row["seconds"] > 0 and math.isfinite(row["warp_error"])
    assert rows["pnp"]["pnp_feature_bytes"] > 0 and "pnp_feature_bytes" not in rows["traj"]
