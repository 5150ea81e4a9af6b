"""bench/video_metrics.py --smoke: the Warp-Err script decodes files, runs the flow and prints finite numbers
(a static clip 0 in every region, a consistent pan small, a flickering edit of it much larger)."""
import json
import math
import pathlib
import subprocess
import sys

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]


def test_video_metrics_smoke(tmp_path):
    out = tmp_path / "metrics.json"
    proc = subprocess.run([sys.executable, str(PACK_DIR / "bench" / "video_metrics.py"), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| region | Warp-Err |") == 3
    static, moving, flicker = json.loads(out.read_text())
    assert {k: v["value"] for k, v in static["regions"].items()} == {"all": 0.0, "inside": 0.0, "outside": 0.0}
    assert static["regions"]["inside"]["pixels"] == [32 * 48] * 4
    pan, flick = moving["regions"]["all"]["value"], flicker["regions"]["all"]["value"]
    assert math.isfinite(pan) and math.isfinite(flick) and 10 * pan < flick
    assert moving["frames"] == 5 and moving["size"] == [64, 48] and moving["error"] == "squared"
