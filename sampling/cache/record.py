"""The on-disk form of a cached inversion: one safetensors file with a JSON header (docs/design.md §17).

Layout: the Inversion's tensors under `core/<field>`, optional extra tensors (PnP features later,
e.g. `pnp/<step>/<layer>`) under `extra/<name>`, and in the safetensors metadata one entry
`videograin` holding JSON: format name and version, the cache key, the Inversion's own key and
steps, the creation time, caller metadata, and per tensor its dtype, shape and `tensor_digest`
(sha256 over dtype, shape and bytes), so a damaged file is detected. Tensors are read with
safetensors only: no pickle, no `torch.load`.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import safetensors.torch
import torch

from ..inversion import Inversion
from .key import tensor_digest

FORMAT = "videograin-inversion"
VERSION = 1
HEADER_KEY = "videograin"
CORE_FIELDS = ("latent_T", "source", "trajectory", "sigmas")
_CORE, _EXTRA = "core/", "extra/"


class CacheFileError(ValueError):
    """A cache file that cannot be used; `reason` says why in a few words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(eq=False)
class CachedInversion:
    """What a cache file holds: the Inversion, its extra tensors by name, the caller's metadata and the
    creation time (seconds since the epoch)."""

    inversion: Inversion
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    # A private contiguous CPU copy: safetensors refuses views that share storage.
    return t.detach().to("cpu", copy=True).contiguous()


def encode(key: str, inversion: Inversion, extra: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
           created: float) -> bytes:
    """The file bytes for one entry. Raises ValueError (CacheFileError) for inputs it cannot store."""
    tensors = {_CORE + f: _cpu_copy(getattr(inversion, f)) for f in CORE_FIELDS}
    for name, t in extra.items():
        if not isinstance(name, str) or not name:
            raise CacheFileError(f"extra tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise CacheFileError(f"extra tensor {name!r} is a {type(t).__name__}, not a tensor")
        tensors[_EXTRA + name] = _cpu_copy(t)
    header = {
        "format": FORMAT, "version": VERSION, "key": key,
        "inversion_key": str(inversion.key), "steps": int(inversion.steps), "created": float(created),
        "tensors": {n: {"dtype": str(t.dtype), "shape": list(t.shape), "sha256": tensor_digest(t)}
                    for n, t in tensors.items()},
        "meta": dict(meta),
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise CacheFileError(f"meta must be JSON data: {e}") from None
    return safetensors.torch.save(tensors, metadata={HEADER_KEY: text})


def read_header(data: bytes) -> dict[str, Any]:
    """The `videograin` JSON header of file bytes, checked for format and version."""
    # safetensors layout: u64 little-endian header length, then that many bytes of JSON.
    if len(data) < 8:
        raise CacheFileError(f"file is {len(data)} bytes, too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CacheFileError(f"safetensors header claims {n} bytes but the file has {len(data) - 8} after it "
                             "(truncated)")
    try:
        outer = json.loads(data[8:8 + n])
        header = json.loads(outer["__metadata__"][HEADER_KEY])
    except (ValueError, KeyError, TypeError) as e:
        raise CacheFileError(f"bad header ({type(e).__name__}: {e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CacheFileError("not a VideoGrain inversion file")
    if header.get("version") != VERSION:
        raise CacheFileError(f"format version {header.get('version')!r}, this pack reads version {VERSION} "
                             "(a file from an older or newer VideoGrain)")
    return header


def decode(data: bytes, key: str) -> CachedInversion:
    """The entry in file bytes, checked against `key` and every digest; CacheFileError if unusable."""
    header = read_header(data)
    if header.get("key") != key:
        raise CacheFileError(f"file holds key {header.get('key')!r}, not {key!r}")
    specs = header.get("tensors")
    if not isinstance(specs, dict) or not isinstance(header.get("steps"), int):
        raise CacheFileError("bad header (tensors or steps missing)")
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own SafetensorError (not exported everywhere)
        raise CacheFileError(f"unreadable tensor data ({e})") from None
    missing = sorted(set(specs) - set(tensors))
    unexpected = sorted(set(tensors) - set(specs))
    if missing or unexpected:
        raise CacheFileError(f"tensors missing {missing} / not in the header {unexpected}")
    for f in CORE_FIELDS:
        if _CORE + f not in tensors:
            raise CacheFileError(f"no {f} tensor")
    for name, t in tensors.items():
        spec = specs[name]
        if not isinstance(spec, dict) or spec.get("dtype") != str(t.dtype) or spec.get("shape") != list(t.shape):
            raise CacheFileError(f"tensor {name} is {t.dtype} {list(t.shape)}, the header says {spec}")
        if spec.get("sha256") != tensor_digest(t):
            raise CacheFileError(f"tensor {name} fails its sha256 check (corrupted data)")
    try:
        inversion = Inversion(**{f: tensors[_CORE + f] for f in CORE_FIELDS}, steps=header["steps"],
                              key=str(header.get("inversion_key", "")))
    except ValueError as e:
        raise CacheFileError(f"inconsistent record ({e})") from None
    meta = header.get("meta")
    return CachedInversion(inversion=inversion,
                           extra={n[len(_EXTRA):]: t for n, t in tensors.items() if n.startswith(_EXTRA)},
                           meta=meta if isinstance(meta, dict) else {}, created=float(header.get("created", 0.0)))
