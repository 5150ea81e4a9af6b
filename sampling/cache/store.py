"""A folder of cached inversions: atomic writes, damage detection and least-recently-used eviction.

One file per entry, `<key>.safetensors` (format in `record.py`). Writes go to a unique temp file in
the same folder, are fsynced and renamed over the entry (`os.replace` is atomic), so a reader or a
second writer of the same key (another process) only ever sees a whole file. Last use is the file's
mtime, set on every write and hit; after each write the least recently used entries are deleted
until the folder's entries fit the cap. Only files named like entries (64 hex digits) or like this
module's temp files are ever deleted, whatever else the folder holds.

Failures to read or write the folder never raise into the edit: `get` misses and `put` returns
False, with a warning in the log (a repeated failure of one folder is logged once per process).
"""
from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..inversion import Inversion
from .record import CachedInversion, CacheFileError, decode, encode

_log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
STALE_TEMP_SECONDS = 3600.0  # temp files older than this are leftovers of a crashed writer
_KEY = re.compile(r"[0-9a-f]{64}")
_ENTRY = re.compile(r"([0-9a-f]{64})\.safetensors")
_TEMP = re.compile(r"\.[0-9a-f]{64}\.\d+\.[0-9a-f]{32}\.tmp")
_reported: set[tuple[str, str]] = set()  # (folder, problem) already warned about in this process


class CacheError(ValueError):
    """A cache set up or called wrongly (cap, key, record types): a caller's mistake, not a disk problem."""


@dataclass(frozen=True)
class CacheEntry:
    """One cache file: its key, path, size in bytes and last use (mtime, seconds since the epoch)."""

    key: str
    path: Path
    size_bytes: int
    last_used: float


def _warn_once(folder: Path, problem: str, message: str, *args: Any) -> None:
    tag = (str(folder), problem)
    if tag in _reported:
        _log.debug(message, *args)
    else:
        _reported.add(tag)
        _log.warning(message, *args)


def _touch(path: Path) -> None:
    # Explicit nanosecond times: file systems stamp writes with a coarse clock (milliseconds), which
    # would tie entries written in one burst.
    now = time.time_ns()
    os.utime(path, ns=(now, now))


def _stat_id(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class InversionCache:
    """Cached inversions in `folder` (created on the first `put`), at most `cap_bytes` of entry files.

    `cap_bytes` must be a positive int: a cap of 0 is refused with CacheError rather than read as
    "off", because it would evict every entry the moment it is written; callers that want no cache
    do not build one. An entry larger than the cap alone is not stored (put returns False).
    """

    def __init__(self, folder: str | os.PathLike[str], cap_bytes: int):
        if isinstance(cap_bytes, bool) or not isinstance(cap_bytes, int):
            raise CacheError(f"the inversion cache cap must be a whole number of bytes, got {cap_bytes!r}")
        if cap_bytes <= 0:
            raise CacheError(f"the inversion cache cap must be more than 0 bytes, got {cap_bytes} (a cap of 0 "
                             "would delete every inversion as soon as it is written); to run without the "
                             "cache, turn the cache off instead")
        self.folder = Path(folder)
        self.cap_bytes = cap_bytes

    def path(self, key: str) -> Path:
        """The file of `key` (whether or not it exists)."""
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise CacheError(f"cache keys are 64 lowercase hex digits (inversion_cache_key), got {key!r}")
        return self.folder / f"{key}{SUFFIX}"

    def get(self, key: str) -> Inversion | None:
        """The cached Inversion of `key`, or None on a miss or an unusable file (then deleted)."""
        entry = self.get_entry(key)
        return None if entry is None else entry.inversion

    def get_entry(self, key: str) -> CachedInversion | None:
        """Like `get`, with the extra tensors, metadata and creation time stored alongside."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                seen = _stat_id(os.fstat(f.fileno()))
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):  # a miss; put reports a folder that cannot exist
            return None
        except OSError as e:
            _warn_once(self.folder, f"read:{type(e).__name__}", "VideoGrain: cannot read inversion cache file %s "
                       "(%s); the inversion is recomputed", path, e)
            return None
        try:
            entry = decode(data, key)
        except CacheFileError as e:
            _log.warning("VideoGrain: inversion cache file %s is unusable: %s; deleting it, the inversion "
                         "is recomputed", path, e.reason)
            self._discard(path, seen)
            return None
        try:
            _touch(path)
        except OSError:  # a read-only cache still serves hits; its eviction order just stays stale
            pass
        return entry

    def _discard(self, path: Path, seen: tuple[int, int, int]) -> None:
        # Leave the path alone if another process has replaced the damaged file meanwhile.
        try:
            if _stat_id(os.stat(path)) == seen:
                os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            _log.warning("VideoGrain: cannot delete the unusable inversion cache file %s (%s)", path, e)

    def put(self, key: str, inversion: Inversion, extra_tensors: Mapping[str, torch.Tensor] | None = None,
            meta: Mapping[str, Any] | None = None) -> bool:
        """Store `inversion` (and extra tensors by name, JSON metadata) under `key`; True when written.

        Disk problems (folder not creatable or writable, disk full) log a warning and return False.
        Wrong argument types raise CacheError.
        """
        path = self.path(key)
        if not isinstance(inversion, Inversion):
            raise CacheError(f"put stores an Inversion, got {type(inversion).__name__}")
        try:
            data = encode(key, inversion, dict(extra_tensors or {}), dict(meta or {}), time.time())
        except CacheFileError as e:
            raise CacheError(str(e)) from None
        if len(data) > self.cap_bytes:
            _log.warning("VideoGrain: this inversion takes %.1f MB, more than the whole inversion cache (%.1f MB); "
                         "not cached. Fix: raise the cache size", len(data) / 1e6, self.cap_bytes / 1e6)
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            _warn_once(self.folder, "mkdir", "VideoGrain: cannot create the inversion cache folder %s (%s); "
                       "inversions are not cached. Fix: pick a writable folder", self.folder, e)
            return False
        if not self._write(path, key, data):
            return False
        self._evict(keep=path)
        self._sweep_temps()
        return True

    def _write(self, path: Path, key: str, data: bytes) -> bool:
        temp = self.folder / f".{key}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, path)
            _touch(path)
        except OSError as e:
            try:
                os.remove(temp)
            except OSError:
                pass
            _warn_once(self.folder, f"write:{type(e).__name__}:{getattr(e, 'errno', '')}",
                       "VideoGrain: cannot write the inversion cache file %s (%s); the inversion is not "
                       "cached. Fix: pick a writable folder with free space", path, e)
            return False
        self._sync_folder()
        return True

    def _sync_folder(self) -> None:
        # Makes the rename itself durable on POSIX; directories cannot be opened on Windows.
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def entries(self) -> list[CacheEntry]:
        """The entry files, least recently used first (the eviction order)."""
        found = []
        try:
            listing = list(os.scandir(self.folder))
        except OSError:  # no folder yet, or not a folder: nothing cached
            return []
        for item in listing:
            m = _ENTRY.fullmatch(item.name)
            if m is None:
                continue
            try:
                st = item.stat()
            except OSError:  # deleted by another process meanwhile
                continue
            found.append((st.st_mtime_ns, item.name, CacheEntry(m.group(1), Path(item.path), st.st_size,
                                                                st.st_mtime_ns / 1e9)))
        found.sort(key=lambda x: (x[0], x[1]))
        return [e for _, _, e in found]

    def total_bytes(self) -> int:
        """Total size of the entry files."""
        return sum(e.size_bytes for e in self.entries())

    def _evict(self, keep: Path) -> None:
        entries = self.entries()
        total = sum(e.size_bytes for e in entries)
        for e in entries:
            if total <= self.cap_bytes:
                break
            if e.path == keep:
                continue
            try:
                os.remove(e.path)
                _log.info("VideoGrain: inversion cache over %.1f MB, removed the least recently used %s",
                          self.cap_bytes / 1e6, e.path.name)
            except FileNotFoundError:
                pass
            except OSError as err:
                _warn_once(self.folder, "evict", "VideoGrain: cannot delete inversion cache file %s (%s)", e.path, err)
                continue
            total -= e.size_bytes

    def _sweep_temps(self, older_than: float = STALE_TEMP_SECONDS) -> int:
        """Delete temp files left by crashed writers (older than `older_than` seconds); their count."""
        removed = 0
        limit = time.time() - older_than
        try:
            listing = list(os.scandir(self.folder))
        except OSError:
            return 0
        for item in listing:
            if _TEMP.fullmatch(item.name):
                try:
                    if item.stat().st_mtime < limit:
                        os.remove(item.path)
                        removed += 1
                except OSError:
                    pass
        return removed

    def clear(self) -> int:
        """Delete every entry (and stale temp files); the number of entries deleted."""
        removed = 0
        for e in self.entries():
            try:
                os.remove(e.path)
                removed += 1
            except FileNotFoundError:
                pass
            except OSError as err:
                _log.warning("VideoGrain: cannot delete inversion cache file %s (%s)", e.path, err)
        self._sweep_temps()
        return removed
