"""The unmodulated floor's attention per SDPA backend (issue 11, stretch: a faster floor).

One plain space-time self-attention call per SD1.5 level of a 16-frame 512² clip (64×64: d 40,
32×32: d 80, 16×16 and 8×8: d 160; 8 heads; one CFG branch and the batched pair; fp16), with each of
PyTorch's SDPA backends forced (flash, memory-efficient, cuDNN) beside the default choice, plus the
largest difference of each backend's output from the default's (exactness to fp16 rounding).

    python bench/floor_attention.py --out results/h200_floor_attention.json
    python bench/floor_attention.py --smoke          # CPU, toy size: the default and math backends only
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_seconds  # noqa: E402

LEVELS = [("64x64", 4096, 40), ("32x32", 1024, 80), ("16x16", 256, 160), ("8x8", 64, 160)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cuda = torch.cuda.is_available() and not args.smoke
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    backends = {"default": None}
    if cuda:
        backends.update(flash=SDPBackend.FLASH_ATTENTION, efficient=SDPBackend.EFFICIENT_ATTENTION,
                        cudnn=SDPBackend.CUDNN_ATTENTION)
    else:
        backends["math"] = SDPBackend.MATH
    rows = []
    for name, cells, d in LEVELS:
        for batch in (1, 2):
            n = args.frames * (cells if cuda else 16)
            g = torch.Generator(device="cpu").manual_seed(0)
            q, k, v = (torch.randn(batch, 8, n, d, generator=g).to(device, dtype) for _ in range(3))
            ref = F.scaled_dot_product_attention(q, k, v)
            row = {"level": name, "batch": batch, "tokens": n, "head_dim": d}
            for label, backend in backends.items():
                def call(backend=backend):
                    if backend is None:
                        return F.scaled_dot_product_attention(q, k, v)
                    with sdpa_kernel([backend]):
                        return F.scaled_dot_product_attention(q, k, v)
                try:
                    out = call()  # the warm-up call, and the output compared
                    row[label] = {"seconds": median_seconds(call, device, args.repeats, warmup=False),
                                  "max_diff": float((out.float() - ref.float()).abs().max())}
                except RuntimeError as e:  # a backend that does not support this shape or GPU
                    row[label] = {"error": str(e).splitlines()[0][:120]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    labels = list(backends)
    print("\n| level | batch | tokens | d | " + " | ".join(labels) + " |")
    print("|" + "---|" * (4 + len(labels)))
    for r in rows:
        cells = [f"{1000 * r[x]['seconds']:.2f} ms (Δ {r[x]['max_diff']:.1e})" if "seconds" in r[x] else "n/a"
                 for x in labels]
        print(f"| {r['level']} | {r['batch']} | {r['tokens']} | {r['head_dim']} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
