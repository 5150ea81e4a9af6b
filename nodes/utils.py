"""Path and fingerprint helpers of the node layer: where an input value points, and when it changed.

Two kinds of path input exist. A value picked from a list (VideoGrainLoadVideo's `video`) must resolve
inside ComfyUI's input folder, symlinks included (the real path is checked), as core loaders do. A
free-text path (`path`, `masks_path`) may point anywhere on the machine for a local user; when the
server is shared on a network that is a way to read any file, so it is confined to the input, output
and temp folders when `VIDEOGRAIN_CONFINE_PATHS=1` is set, or by default when ComfyUI listens on an
address other than the loopback one (`VIDEOGRAIN_CONFINE_PATHS=0` lifts that).
"""
from __future__ import annotations

import contextlib
import hashlib
import os

CONFINE_ENV = "VIDEOGRAIN_CONFINE_PATHS"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class PathNotAllowed(ValueError):
    """A path input that resolves outside the folders it may read."""


@contextlib.contextmanager
def _as_path_not_allowed():
    """Any other ValueError of path handling becomes PathNotAllowed, the one error callers handle: newer
    folder_paths raises ValueError("Invalid file path") on traversal, os.path one on a NUL byte."""
    try:
        yield
    except PathNotAllowed:
        raise
    except ValueError as exc:
        raise PathNotAllowed(str(exc)) from exc


def input_dir() -> str:
    import folder_paths  # imported here: the module also loads without a host (unit tests)
    return folder_paths.get_input_directory()


def _inside(path: str, root: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def resolve_listed(value: str) -> str:
    """The full path of a list value relative to the input folder; PathNotAllowed when its real path
    (after `..` and symlinks) leaves the input folder."""
    with _as_path_not_allowed():
        root = input_dir()
        full = os.path.join(root, value)
        if os.path.isabs(value) or not _inside(full, root):
            raise PathNotAllowed(f"{value!r} resolves outside ComfyUI's input folder")
        return full


def paths_confined() -> bool:
    """Whether free-text paths are confined to the input/output/temp folders (see the module doc)."""
    setting = os.environ.get(CONFINE_ENV, "").strip().lower()
    if setting in ("1", "true", "yes", "on"):
        return True
    if setting in ("0", "false", "no", "off"):
        return False
    try:
        from comfy.cli_args import args
    except ImportError:
        return False
    listen = {part.strip() for part in str(getattr(args, "listen", "127.0.0.1") or "").split(",") if part.strip()}
    return bool(listen - _LOOPBACK)


def allowed_roots() -> list[str]:
    import folder_paths
    return [folder_paths.get_input_directory(), folder_paths.get_output_directory(),
            folder_paths.get_temp_directory()]


def resolve_free_path(value: str) -> str:
    """A free-text path: quotes and `~` handled, relative paths start in the input folder. When paths
    are confined (`paths_confined`), PathNotAllowed unless it lies inside the input, output or temp folder."""
    with _as_path_not_allowed():
        cleaned = os.path.expanduser(value.strip().strip('"').strip("'"))
        full = cleaned if os.path.isabs(cleaned) else os.path.join(input_dir(), cleaned)
        if paths_confined() and not any(_inside(full, root) for root in allowed_roots()):
            raise PathNotAllowed(f"{value!r} is outside ComfyUI's input, output and temp folders, and this "
                                 f"server confines paths ({CONFINE_ENV}, or a --listen address other than the "
                                 "loopback one)")
        return full


def fingerprint(path: str) -> str:
    """Changes when the file, or any file in the folder or one level below it, is replaced or edited;
    for a file, a sidecar `<stem>.colors.txt` (label-video names) counts too."""
    if not os.path.exists(path):
        return "missing"
    if os.path.isdir(path):
        entries = []
        for folder, dirs, files in os.walk(path):
            depth = os.path.relpath(folder, path).count(os.sep) + (folder != path)
            if depth >= 1:
                dirs[:] = []
            dirs.sort()
            entries += [os.path.join(folder, f) for f in sorted(files)]
    else:
        sidecar = os.path.splitext(path)[0] + ".colors.txt"
        entries = [path] + ([sidecar] if os.path.isfile(sidecar) else [])
    digest = hashlib.sha256()
    for p in entries:
        st = os.stat(p)
        digest.update(f"{os.path.relpath(p, path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()
