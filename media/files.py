"""Which files are videos or images, and in what order frame files are read."""
from __future__ import annotations

import os
import re

VIDEO_EXTENSIONS = (".mp4", ".mov", ".webm", ".mkv", ".gif", ".avi", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: "f2" before "f10"."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def is_video_file(path: str) -> bool:
    """True for a regular file whose extension is a video container this pack decodes."""
    return os.path.isfile(path) and path.lower().endswith(VIDEO_EXTENSIONS)


def list_frame_files(folder: str | os.PathLike) -> list[str]:
    """Image files directly inside `folder` (hidden files skipped), naturally sorted, as full paths."""
    folder = os.fspath(folder)
    names = [n for n in os.listdir(folder)
             if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
             and os.path.isfile(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def list_subfolders(folder: str | os.PathLike) -> list[str]:
    """Visible subfolders of `folder`, naturally sorted, as full paths."""
    folder = os.fspath(folder)
    names = [n for n in os.listdir(folder) if not n.startswith(".") and os.path.isdir(os.path.join(folder, n))]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]
