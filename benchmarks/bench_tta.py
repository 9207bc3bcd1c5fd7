"""Batched TTA cost: time of n views in one forward / (n x time of one view), on the CPU.

    python -m benchmarks.bench_tta [--model=resnet18 --batch=32 --size=64 --views=d4 --reps=7]

Arms alternate (one-view, batched, one-view, ...) so drifting machine load hits both alike;
the first round is warm-up and dropped; medians are compared. Target: ratio <= 1.05.
"""
from __future__ import annotations

import statistics
import time

import fire
import timm
import torch

from kit import tta


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(model: str = "resnet18", batch: int = 32, size: int = 64, views: str = "d4", reps: int = 7,
          threads: int = 0, max_batch: int = -1) -> float:
    """Print and return median(batched n-view time) / (n x median(one-view time)).

    max_batch: rows per forward pass as `kit predict` sets them (-1: kit.tta.auto_max_batch; 0: all views in one).
    """
    if threads:
        torch.set_num_threads(threads)
    names = tta.parse_views(views)
    net = timm.create_model(model, num_classes=10, pretrained=False).eval()
    x = torch.randn(batch, 3, size, size)
    cap = tta.auto_max_batch(x, "cpu") if max_batch < 0 else max_batch
    fn = lambda b: net(b).softmax(-1)  # noqa: E731
    one, many = [], []
    with torch.inference_mode():
        for r in range(reps + 1):
            t_one = _time(lambda: fn(x))
            t_many = _time(lambda: tta.predict_views(fn, x, names, "mean", max_batch=cap))
            if r:  # round 0 warms up allocator and kernels
                one.append(t_one)
                many.append(t_many)
    ratio = statistics.median(many) / (len(names) * statistics.median(one))
    print(f"{model} batch {batch} at {size}px, {len(names)} views ({views}), {torch.get_num_threads()} threads: "
          f"one view {statistics.median(one) * 1e3:.1f} ms, batched {statistics.median(many) * 1e3:.1f} ms, "
          f"ratio {ratio:.3f} (target <= 1.05), forward passes of <= {cap or batch * len(names)} rows")
    return ratio


if __name__ == "__main__":
    fire.Fire(bench)
