"""Cost of recording the automatic-mask affinity (docs/design.md §10) at the 32×32-equivalent level.

    python bench/frame_blocks.py --device cuda --frames 8,16,32 --size 512
    python bench/frame_blocks.py --smoke          # tiny CPU run, seconds

Per self-attention call of one CFG branch (B = 1, 8 heads, 640 channels at 32×32 for 512²) it times:
plain space-time attention (what the call costs without recording), `FrameBlockAccumulator.attend`
(fused kernel with LSE + the F diagonal blocks), and `add` without an LSE (chunked scores over all
keys). It also reports the largest difference between the two recorded affinities and the memory the
recording holds. Standalone: no ComfyUI import.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import torch

PACK_DIR = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACK_DIR / "bench"))
from pack_import import import_videograin  # noqa: E402
from timing import median_seconds  # noqa: E402

import_videograin()

from videograin.attention.spacetime import spacetime_attention  # noqa: E402
from videograin.masks.clusters import FrameBlockAccumulator  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", default="16")
    p.add_argument("--size", type=int, default=512, help="square frame side in pixels")
    p.add_argument("--dtype", default="fp16", choices=DTYPES)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    if a.smoke:
        a.device, a.frames, a.size, a.dtype, a.repeats = "cpu", "2", 128, "fp32", 1
    dtype, side, heads, channels = DTYPES[a.dtype], a.size // 16, 8, 640
    print(f"device {a.device} ({torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, {a.dtype}, level {side}x{side}, {heads} heads x {channels // heads}")
    print("frames | plain ms | attend ms | add ms | attend-plain ms | fused | max |attend-add| | affinity MiB")
    for frames in [int(x) for x in a.frames.split(",")]:
        g = torch.Generator(device=a.device).manual_seed(0)
        n = frames * side * side
        q, k, v = (torch.randn(1, n, channels, generator=g, device=a.device, dtype=dtype) for _ in range(3))
        acc_fused = FrameBlockAccumulator(frames, side, side, device=a.device)
        acc_plain = FrameBlockAccumulator(frames, side, side, device=a.device)
        plain = 1000 * median_seconds(lambda: spacetime_attention(q, k, v, heads), a.device, a.repeats)
        attend = 1000 * median_seconds(lambda: acc_fused.attend(q, k, v, heads), a.device, a.repeats)
        add = 1000 * median_seconds(lambda: acc_plain.add(q, k, heads), a.device, a.repeats)
        diff = float((acc_fused.mean() - acc_plain.mean()).abs().max())
        mib = acc_fused.sum.numel() * 4 / 2 ** 20
        print(f"{frames:6d} | {plain:8.2f} | {attend:9.2f} | {add:6.2f} | {attend - plain:15.2f} | "
              f"{acc_fused.fused!s:5} | {diff:18.2e} | {mib:12.1f}")


if __name__ == "__main__":
    main()
