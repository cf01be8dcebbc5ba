"""Timing for the PyTorch peers: milliseconds per call of fn, after warm-up calls, with the
device synchronised before the clock starts and before it stops (CUDA runs asynchronously)."""
import time

import torch


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def ms_per_call(fn, iters, warmup, device):
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters * 1e3
