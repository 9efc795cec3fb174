"""Shared timing helper for the benchmark scripts: best of N wall-clock repeats after one warm-up."""
from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> str:
    import os
    import platform

    import torch
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores{gpu}, torch {torch.__version__}"


def limit_threads(n: int) -> None:
    """Give torch and the BLAS/OpenMP pools under numpy/scikit-learn the same thread count, so both sides of a
    comparison run on the same cores. On a shared machine, busy-waiting BLAS threads can make a 2-thread run
    ~100× slower than a 1-thread one, which would measure the contention rather than the code."""
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(n)
    threadpool_limits(n)
