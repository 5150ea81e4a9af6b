"""The Triton row-extrema kernel itself, run by Triton's CPU interpreter (TRITON_INTERPRET=1).

CI has no GPU, so without this only the torch fallback would be tested. The interpreter executes the
same kernel source with NumPy; every tile config the pack can launch is checked against the chunked
torch extrema, with ragged key tiles, head dims that need two dot products (80 = 64 + 16) and the
weight-0 row skip.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
PACK_DIR = Path(__file__).resolve().parents[2]
SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1] + "/bench")
from pack_import import import_videograin
import_videograin()
import torch
from videograin.attention import extrema
torch.manual_seed(0)
out = []
for d, configs in ((80, extrema.EXTREMA_CONFIGS[-2:]), (40, [None]), (16, [None])):
    q, k = torch.randn(1, 2, 70, d), torch.randn(1, 2, 45, d)
    want_max, want_min = extrema.row_extrema_torch(q, k, 0.125)
    for config in configs:
        got_max, got_min = extrema.row_extrema_triton(q, k, 0.125, None, config)
        out.append(max(float((got_max - want_max).abs().max()), float((got_min - want_min).abs().max())))
w = torch.zeros(70); w[40:] = 0.3                      # rows 0-31 form a tile of weight 0 (BLOCK_M 32)
got_max, got_min = extrema.row_extrema_triton(q, k, 0.125, w, (32, 32, 4, 2))
skip = bool((got_max[..., :32] == 0).all() and (got_min[..., :32] == 0).all())
kept = float((got_max[..., 32:] - want_max[..., 32:]).abs().max())
print(json.dumps({"errors": out, "skipped": skip, "kept": kept,
                  "rule": [extrema.launch_config(80, 2), extrema.launch_config(160, 2)]}))
"""


def test_triton_extrema_kernel_matches_torch_in_the_interpreter():
    env = {"TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, str(PACK_DIR)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(result["errors"]) == 4 and max(result["errors"]) < 1e-5
    assert result["skipped"] and result["kept"] < 1e-5
    # Fixed tiles that fit ~96 KiB of shared memory: the widest config for d = 80, a smaller one for 160.
    assert result["rule"] == [[128, 64, 8, 3], [64, 64, 4, 2]]
