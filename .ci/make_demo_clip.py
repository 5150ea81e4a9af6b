#!/usr/bin/env python3
"""Write the bundled synthetic demo clip and its region masks (deterministic, no third-party media).

    python .ci/make_demo_clip.py                  # (re)write workflows/assets/videograin_demo/
    python .ci/make_demo_clip.py --out DIR        # write elsewhere
    python .ci/make_demo_clip.py --link INPUT_DIR # also link the assets into a ComfyUI input folder
                                                  # as INPUT_DIR/videograin_demo (idempotent)

Needs numpy, Pillow and PyAV (all in ComfyUI's requirements): run it with the host's Python.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

PACK_DIR = Path(__file__).resolve().parents[1]
ASSETS = PACK_DIR / "workflows" / "assets" / "videograin_demo"
LINK_NAME = "videograin_demo"


def _synthetic():
    # Loaded by file path: the pack's folder name may hold a hyphen, and synthetic.py imports nothing
    # from the pack.
    spec = importlib.util.spec_from_file_location("videograin_synthetic", PACK_DIR / "masks" / "synthetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def link_assets(input_dir: Path, assets: Path = ASSETS) -> Path:
    """Make `input_dir/videograin_demo` a symlink to `assets`; leave it if it already is one."""
    input_dir.mkdir(parents=True, exist_ok=True)
    link = input_dir / LINK_NAME
    if link.is_symlink() and Path(os.readlink(link)) == assets:
        return link
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise SystemExit(f"{link} exists and is not a link; move it away first")
    link.symlink_to(assets, target_is_directory=True)
    return link


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: %(default)s)")
    parser.add_argument("--link", type=Path, metavar="INPUT_DIR", help="link the assets into this input folder")
    parser.add_argument("--link-only", action="store_true", help="only make the link, do not render")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if not args.link_only:
        clip = _synthetic().write_demo(out)
        print(f"[videograin] wrote {out}/clip.mp4 ({len(clip.frames)} frames, "
              f"{clip.frames.shape[2]}x{clip.frames.shape[1]}, {clip.fps} fps) and masks for "
              f"{', '.join(clip.masks)}")
    if args.link:
        link = link_assets(args.link.resolve(), out)
        print(f"[videograin] {link} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
