#!/usr/bin/env python3
"""Write the bundled synthetic demo clip and its region masks (deterministic, no third-party media).

    python .ci/make_demo_clip.py            # (re)write workflows/assets/videograin_demo/
    python .ci/make_demo_clip.py --out DIR  # write elsewhere

.ci/setup_host.sh copies the assets into the dev host's input folder.

Needs numpy, Pillow and PyAV (all in ComfyUI's requirements): run it with the host's Python.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import synthetic_clip  # beside this script (.ci is sys.path[0] when it runs)

PACK_DIR = Path(__file__).resolve().parents[1]
ASSETS = PACK_DIR / "workflows" / "assets" / "videograin_demo"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    clip = synthetic_clip.write_demo(out)
    print(f"[videograin] wrote {out}/clip.mp4 ({len(clip.frames)} frames, "
          f"{clip.frames.shape[2]}x{clip.frames.shape[1]}, {clip.fps} fps) and masks for "
          f"{', '.join(clip.masks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
