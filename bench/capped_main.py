"""Start ComfyUI's main.py in this process, optionally limited to a card of CAP GiB (for bench/run_workflow.py).

    python bench/capped_main.py --comfy DIR [--cap-gib X] [--stats FILE] [--hide MOD,...] -- MAIN.PY ARGS...

- `--cap-gib X` makes the process behave like a card of X GiB, on two levels that must agree:
  1. torch: right after ComfyUI's `comfy.model_management` has been imported (it creates the CUDA
     context; importing torch here, earlier, would run before main.py's own environment set-up), the
     caching allocator is limited with `torch.cuda.set_per_process_memory_fraction((X·2³⁰ − used) / total)`,
     where `used` is what the device already holds (this process's CUDA context, ~0.5 GiB, and anything
     else on the card): the context lives on a real X GiB card too, so context + allocator ≤ X.
  2. ComfyUI: its model management reads the device's free memory (cudaMemGetInfo), which ignores torch's
     fraction, and keeps `--reserve-vram` GiB of it untouched (comfy/model_management.py: EXTRA_RESERVED_VRAM,
     added to every load's memory requirement and to `minimum_inference_memory`). So `--reserve-vram
     (total − X) + 0.4` is passed: the free memory ComfyUI plans with is then what an X GiB card would have
     free, less ComfyUI's own Linux default reserve of 0.4 GiB (which the flag replaces). It then offloads
     or partially loads models exactly when an X GiB card would.
- `--stats FILE`: a thread writes the allocator's peak counters (torch.cuda.max_memory_allocated /
  max_memory_reserved, bytes) as JSON every 0.25 s, with the time the allocated peak last grew; the
  process runs one prompt, so the last write after it finished is that prompt's peak. On the CPU it
  writes {"device": "cpu"}.
- `--hide MOD,...`: make these top-level modules unimportable (the CPU smoke test hides what the GPU
  machine's image lacks, such as comfyui_frontend_package, so a missing one fails here first).
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import json
import os
import runpy
import shutil
import subprocess
import sys
import threading
import time

GIB = 2 ** 30
COMFY_DEFAULT_RESERVE_GIB = 0.4  # comfy/model_management.py: EXTRA_RESERVED_VRAM on Linux (400 MiB)


def reserve_vram_gib(total_bytes: int, cap_gib: float) -> float:
    """The --reserve-vram that leaves ComfyUI the free memory of a `cap_gib` card (see the module doc)."""
    if cap_gib <= 0 or cap_gib * GIB > total_bytes:
        raise ValueError(f"--cap-gib {cap_gib} must be above 0 and at most the card's {total_bytes / GIB:.1f} GiB")
    return (total_bytes - cap_gib * GIB) / GIB + COMFY_DEFAULT_RESERVE_GIB


def allocator_fraction(total_bytes: int, used_bytes: int, cap_gib: float) -> float:
    """torch's per-process fraction so that what the device already holds plus the allocator stays ≤ cap."""
    allowed = cap_gib * GIB - used_bytes
    if allowed <= 0:
        raise ValueError(f"the device already holds {used_bytes / GIB:.2f} GiB, more than --cap-gib {cap_gib}")
    return allowed / total_bytes


def card_total_bytes() -> int:
    """The first visible GPU's memory, without initialising CUDA in this process: nvidia-smi's memory.total,
    else torch's cudaMemGetInfo in a child process."""
    smi = shutil.which("nvidia-smi")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    if smi is not None and visible.isdigit():
        out = subprocess.run([smi, "-i", visible, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return int(float(out.stdout.strip().splitlines()[0])) * 2 ** 20
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[1])"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"--cap-gib: cannot read the GPU's memory size: {out.stderr.strip()[-500:]}")
    return int(out.stdout.strip().splitlines()[-1])


class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden by bench/capped_main.py --hide)",
                                      name=fullname)
        return None


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `hook(module)` right after module `name` has been executed."""

    def __init__(self, name: str, hook):
        self.name, self.hook = name, hook

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        run, hook = spec.loader.exec_module, self.hook

        def exec_module(module):
            run(module)
            hook(module)

        spec.loader.exec_module = exec_module
        return spec


STOP_STATS = threading.Event()  # set to end the stats thread (the server itself never does: it is a daemon)


def _write_stats(path: str, torch, device, info: dict) -> None:
    def loop():
        last, peak_time = -1, None
        while not STOP_STATS.is_set():
            now, peak = time.time(), torch.cuda.max_memory_allocated(device)
            if peak > last:  # when the peak last grew (to 0.25 s): the bench names the node running then
                last, peak_time = peak, now
            stats = {**info, "time": now, "max_allocated": peak, "peak_time": peak_time,
                     "max_reserved": torch.cuda.max_memory_reserved(device),
                     "reserved": torch.cuda.memory_reserved(device)}
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(stats, f)
            os.replace(tmp, path)  # readers never see half a file
            STOP_STATS.wait(0.25)

    threading.Thread(target=loop, name="videograin-bench-stats", daemon=True).start()


def make_hook(cap_gib: float | None, stats_path: str | None):
    def hook(mm) -> None:
        import torch

        device = mm.get_torch_device()
        if getattr(device, "type", "cpu") != "cuda":
            if cap_gib:
                raise SystemExit("--cap-gib needs a CUDA device; ComfyUI runs on the CPU here")
            if stats_path:
                with open(stats_path, "w") as f:
                    json.dump({"device": "cpu"}, f)
            return
        free, total = torch.cuda.mem_get_info(device)
        info = {"device": torch.cuda.get_device_name(device), "total": total, "used_at_start": total - free,
                "cap_gib": cap_gib, "reserve_vram_bytes": mm.extra_reserved_memory()}
        if cap_gib:
            fraction = allocator_fraction(total, total - free, cap_gib)
            torch.cuda.set_per_process_memory_fraction(fraction, device)
            info["fraction"] = fraction
            print(f"[videograin-bench] card of {cap_gib} GiB: allocator limited to {fraction * total / GIB:.2f} GiB "
                  f"(device already holds {(total - free) / GIB:.2f} GiB), ComfyUI reserve "
                  f"{mm.extra_reserved_memory() / GIB:.2f} GiB", flush=True)
        if stats_path:
            _write_stats(stats_path, torch, device, info)

    return hook


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--comfy", required=True, help="the ComfyUI folder (holds main.py)")
    ap.add_argument("--cap-gib", type=float)
    ap.add_argument("--stats")
    ap.add_argument("--hide", default="")
    args = ap.parse_args(argv[:split])
    main_args = argv[split + 1:]
    comfy = os.path.abspath(args.comfy)
    if args.cap_gib:
        if "--reserve-vram" in main_args:
            raise SystemExit("--cap-gib sets --reserve-vram itself; do not pass both")
        main_args += ["--reserve-vram", f"{reserve_vram_gib(card_total_bytes(), args.cap_gib):.4f}"]
    hidden = {m.strip() for m in args.hide.split(",") if m.strip()}
    if hidden:
        sys.meta_path.insert(0, _Hide(hidden))
    sys.meta_path.insert(0, _AfterImport("comfy.model_management", make_hook(args.cap_gib, args.stats)))
    os.chdir(comfy)
    sys.path[0] = comfy  # this script's folder out: main.py imports by bare names (nodes, server, utils)
    sys.argv = [os.path.join(comfy, "main.py"), *main_args]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
