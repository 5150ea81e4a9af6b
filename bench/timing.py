"""Wall-clock timing of one GPU (or CPU) call for the benchmark scripts: the device is synchronised around
every run, so the time is the kernels' and not the launch's."""
from __future__ import annotations

import statistics
import time


def median_seconds(fn, device, repeats: int, warmup: bool = True) -> float:
    """Median seconds of `fn()` over `repeats` runs, after one untimed warm-up run unless `warmup` is False
    (to time a first call: compiles, autotuning, library loading)."""
    import torch

    cuda = str(getattr(device, "type", device)) == "cuda"
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
