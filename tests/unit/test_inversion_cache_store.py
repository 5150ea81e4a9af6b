"""The disk inversion cache: bit-exact round trips, damaged and old files detected and deleted, LRU
eviction under the cap, atomic writes from two processes, and disk failures that never raise."""
import json
import logging
import os
import pathlib
import re
import struct
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch

from videograin.sampling.cache import record
from videograin.sampling.cache.store import CacheError, InversionCache
from videograin.sampling.inversion import Inversion

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]
CAP = 10**9


def _key(n: int) -> str:
    return f"{n:064x}"


def _inversion(fill: float | None = None, levels: int = 4, frames: int = 2, size: int = 8) -> Inversion:
    g = torch.Generator().manual_seed(levels * 100 + frames)
    shape = (frames, 4, size, size)
    make = (lambda *s: torch.full(s, fill)) if fill is not None else (lambda *s: torch.randn(*s, generator=g))
    trajectory = make(levels, *shape)
    return Inversion(latent_T=trajectory[-1].clone() / 0.18215, source=make(*shape), trajectory=trajectory,
                     sigmas=torch.linspace(14.6, 0.0, levels + 1), steps=levels, key="inputs-hash")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    bits = (lambda t: t.reshape(-1).view(torch.uint8))
    return a.dtype == b.dtype and a.shape == b.shape and bits(a).equal(bits(b))


def _files(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_is_bit_exact(tmp_path):
    cache = InversionCache(tmp_path, CAP)
    inv = _inversion()
    inv.trajectory[0, 0, 0, 0, 0] = float("nan")  # odd values survive too
    inv.source[0, 0, 0, 0] = -0.0
    extra = {"pnp/40/up.1.0": torch.randn(2, 64, 320).half(), "pnp/41/up.1.0": torch.arange(7),
             "flags": torch.tensor([True, False])}
    assert cache.put(_key(1), inv, extra, {"model": "sd15", "frames": 2})
    entry = cache.get_entry(_key(1))
    got = entry.inversion
    for f in ("latent_T", "source", "trajectory", "sigmas"):
        assert _same(getattr(got, f), getattr(inv, f)), f
    assert (got.steps, got.key) == (inv.steps, inv.key)
    assert set(entry.extra) == set(extra) and all(_same(entry.extra[n], extra[n]) for n in extra)
    assert entry.meta == {"model": "sd15", "frames": 2}
    assert abs(entry.created - time.time()) < 60
    got.trajectory += 1  # the loaded tensors are the caller's own memory
    assert _same(cache.get(_key(1)).trajectory, inv.trajectory)


def test_miss_is_silent(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert InversionCache(tmp_path / "not-yet", CAP).get(_key(1)) is None
        assert InversionCache(tmp_path, CAP).get(_key(1)) is None
    assert caplog.text == ""


def _damage_truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _damage_flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def _damage_header(path):
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # garbage JSON, length field intact
    path.write_bytes(bytes(data))


def _damage_length(path):
    path.write_bytes(struct.pack("<Q", 2**40) + path.read_bytes()[8:])


def _damage_missing_tensor(path):
    data = path.read_bytes()
    header = record.read_header(data)
    tensors = safetensors.torch.load(data)
    del tensors["core/sigmas"]
    path.write_bytes(safetensors.torch.save(tensors, metadata={record.HEADER_KEY: json.dumps(header)}))


def _damage_foreign(path):
    path.write_bytes(safetensors.torch.save({"w": torch.ones(2)}, metadata={"format": "pt"}))


@pytest.mark.parametrize("damage, reason", [
    (_damage_truncate, "truncated|unreadable tensor data"),
    (_damage_flip, "sha256"),
    (_damage_header, "bad header"),
    (_damage_length, "truncated"),
    (_damage_missing_tensor, "missing"),
    (_damage_foreign, "bad header"),
])
def test_damaged_file_is_reported_deleted_and_recomputed(tmp_path, caplog, damage, reason):
    cache = InversionCache(tmp_path, CAP)
    inv = _inversion()
    assert cache.put(_key(7), inv, {"pnp/1/a": torch.ones(5)})
    path = cache.path(_key(7))
    damage(path)
    with caplog.at_level(logging.WARNING):
        assert cache.get(_key(7)) is None
    assert str(path) in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING
    assert re.search(reason, caplog.text), caplog.text
    assert not path.exists()
    assert cache.put(_key(7), inv)  # the caller recomputes and stores again
    assert _same(cache.get(_key(7)).trajectory, inv.trajectory)


def test_older_format_version_is_a_miss(tmp_path, caplog, monkeypatch):
    cache = InversionCache(tmp_path, CAP)
    monkeypatch.setattr(record, "VERSION", 0)
    assert cache.put(_key(3), _inversion())
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING):
        assert cache.get(_key(3)) is None
    assert "format version 0" in caplog.text and "older or newer" in caplog.text
    assert not cache.path(_key(3)).exists()


def test_file_under_another_key_is_not_served(tmp_path, caplog):
    cache = InversionCache(tmp_path, CAP)
    assert cache.put(_key(1), _inversion())
    os.replace(cache.path(_key(1)), cache.path(_key(2)))
    with caplog.at_level(logging.WARNING):
        assert cache.get(_key(2)) is None
    assert "holds key" in caplog.text


def test_lru_eviction_keeps_total_under_cap(tmp_path):
    probe = InversionCache(tmp_path / "probe", CAP)
    assert probe.put(_key(0), _inversion())
    size = probe.total_bytes()
    cache = InversionCache(tmp_path / "c", 3 * size + size // 2)  # room for three entries, not four
    for n in (1, 2, 3):
        assert cache.put(_key(n), _inversion())
        time.sleep(0.002)
    assert cache.get(_key(1)) is not None  # a hit makes entry 1 the most recently used
    time.sleep(0.002)
    assert cache.put(_key(4), _inversion())
    assert [e.key for e in cache.entries()] == [_key(3), _key(1), _key(4)]  # 2 was least recently used
    assert cache.total_bytes() <= cache.cap_bytes
    assert cache.put(_key(5), _inversion())
    assert [e.key for e in cache.entries()] == [_key(1), _key(4), _key(5)]


def test_entry_larger_than_cap_is_not_stored(tmp_path, caplog):
    cache = InversionCache(tmp_path, 10_000)
    assert cache.put(_key(1), _inversion(levels=1, size=4))
    with caplog.at_level(logging.WARNING):
        assert cache.put(_key(2), _inversion(levels=8, size=16)) is False
    assert "more than the whole inversion cache" in caplog.text
    assert [e.key for e in cache.entries()] == [_key(1)]  # nothing evicted for it


def test_eviction_and_clear_leave_other_files_alone(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 50_000)
    (tmp_path / "notes.txt").write_text("mine")
    cache = InversionCache(tmp_path, 20_000)
    assert cache.put(_key(1), _inversion())
    assert cache.put(_key(2), _inversion())
    assert _files(tmp_path) == sorted(["model.safetensors", "notes.txt", f"{_key(2)}.safetensors"])
    assert cache.clear() == 1
    assert _files(tmp_path) == ["model.safetensors", "notes.txt"]
    assert cache.entries() == []


def test_stale_temp_files_are_swept(tmp_path):
    cache = InversionCache(tmp_path, CAP)
    stale = tmp_path / f".{_key(9)}.123.{'0' * 32}.tmp"
    fresh = tmp_path / f".{_key(9)}.124.{'1' * 32}.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert cache.put(_key(1), _inversion())
    assert _files(tmp_path) == sorted([fresh.name, f"{_key(1)}.safetensors"])


@pytest.mark.parametrize("cap", [0, -1, 1.5, True, "1GB"])
def test_bad_cap_is_refused(tmp_path, cap):
    with pytest.raises(CacheError, match="cap"):
        InversionCache(tmp_path, cap)
    assert issubclass(CacheError, ValueError)


def test_cap_of_zero_names_the_fix(tmp_path):
    with pytest.raises(CacheError, match="turn the cache off"):
        InversionCache(tmp_path, 0)


@pytest.mark.parametrize("key", ["../../etc/passwd", "A" * 64, "abc", 5])
def test_bad_key_is_refused(tmp_path, key):
    with pytest.raises(CacheError, match="64 lowercase hex"):
        InversionCache(tmp_path, CAP).get(key)


def test_bad_record_arguments_raise(tmp_path):
    cache = InversionCache(tmp_path, CAP)
    with pytest.raises(CacheError, match="Inversion"):
        cache.put(_key(1), {"latent_T": torch.ones(1)})
    with pytest.raises(CacheError, match="JSON"):
        cache.put(_key(1), _inversion(), meta={"x": object()})
    with pytest.raises(CacheError, match="not a tensor"):
        cache.put(_key(1), _inversion(), {"pnp/0/a": [1.0]})
    assert cache.entries() == []


def test_unwritable_folder_returns_false_and_warns_once(tmp_path, caplog):
    (tmp_path / "file").write_text("a regular file")
    folder = tmp_path / "file" / "cache"  # cannot be created, even by root
    cache = InversionCache(folder, CAP)
    with caplog.at_level(logging.WARNING):
        assert cache.put(_key(1), _inversion()) is False
    assert str(folder) in caplog.text and "cannot create" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert InversionCache(folder, CAP).put(_key(2), _inversion()) is False
        assert cache.get(_key(1)) is None
    assert caplog.text == ""  # reported once per process
    assert cache.entries() == [] and cache.clear() == 0


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes through chmod 0o500")
def test_read_only_folder_returns_false(tmp_path, caplog):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING):
            assert InversionCache(folder, CAP).put(_key(1), _inversion()) is False
        assert "cannot write" in caplog.text
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


_WRITER = """
import sys, time, types, pathlib
package = types.ModuleType("videograin"); package.__path__ = [sys.argv[1]]; sys.modules["videograin"] = package
import torch
from videograin.sampling.cache.store import InversionCache
from videograin.sampling.inversion import Inversion
folder, key, fill, go = sys.argv[2], sys.argv[3], float(sys.argv[4]), pathlib.Path(sys.argv[5])
levels = 10 * int(fill)  # the writers' files differ in size as well as content
traj = torch.full((levels, 8, 4, 32, 32), fill)  # 1.3 or 2.6 MB per write
inv = Inversion(latent_T=traj[-1].clone(), source=traj[0].clone(), trajectory=traj,
                sigmas=torch.linspace(14.6, 0, levels + 1), steps=levels, key=str(fill))
cache = InversionCache(folder, 10**9)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
print(all(cache.put(key, inv) for _ in range(8)), flush=True)
"""


def test_concurrent_writers_leave_one_valid_file(tmp_path, caplog):
    folder, go = tmp_path / "cache", tmp_path / "go"
    reader = InversionCache(folder, 10**9)
    hits = 0
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(PACK_DIR), str(folder), _key(5), str(fill), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for fill in (1.0, 2.0)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        go.touch()
        with caplog.at_level(logging.WARNING):
            while any(p.poll() is None for p in procs):  # a reader meanwhile only ever sees whole files
                hits += reader.get(_key(5)) is not None
                time.sleep(0.002)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert [o[0].strip() for o in outs] == ["True", "True"]
    assert caplog.text == "" and hits > 0
    assert _files(folder) == [f"{_key(5)}.safetensors"]  # no temp files left
    got = InversionCache(folder, 10**9).get(_key(5))
    assert got is not None and got.key in ("1.0", "2.0")
    assert bool((got.trajectory == float(got.key)).all())  # one writer's whole file, not a mix
