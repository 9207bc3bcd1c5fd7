"""Shared pieces of the benchmarks: in-memory data, a timed Trainer, medians of alternating arms."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from kit import Trainer
from kit.demo import make_demo


class MemoryImages(Dataset):
    """Random images held in memory (no decoding, no augmentation): the loop alone is measured."""

    def __init__(self, n: int, size: int, num_classes: int = 10, seed: int = 0, uint8: bool = False):
        g = torch.Generator().manual_seed(seed)
        # uint8: what the kit's pipelines hand the loop (normalised on the device, in the step, like the real arm)
        self.images = (torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8) if uint8
                       else torch.randn(n, 3, size, size, generator=g))
        self.targets = torch.randint(0, num_classes, (n,), generator=g)
        self.ids = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "target": self.targets[i], "index": i}


def demo_competition() -> Path:
    """A demo competition in a temporary folder (the Trainer needs one for its classes and metric)."""
    root = Path(tempfile.mkdtemp(prefix="kit-bench-")) / "demo"
    make_demo(root)
    return root


class TimedTrainer(Trainer):
    """The kit's Trainer on in-memory data; records the wall time between consecutive train steps."""

    def __init__(self, config, train_data: Dataset | None = None, valid_data: Dataset | None = None):
        super().__init__(config)
        # per instance: one benchmark's in-memory data must not leak into the next one's real-data arm
        self.train_data, self.valid_data = train_data, valid_data
        self.calls = 0  # function calls so far, counted during fit_counting_calls

    def build_datasets(self, fold: int):
        """In-memory train/valid sets when set, else the competition's real images and augmentation."""
        self.stamps, self.stamp_epochs, self.stamp_calls = [], [], []
        if self.train_data is None:
            return super().build_datasets(fold)
        return self.train_data, self.valid_data

    def train_step(self, batch: dict) -> dict:
        """Stamp the time, then the base step."""
        self.stamps.append(time.perf_counter())
        self.stamp_epochs.append(self.epoch)
        self.stamp_calls.append((self.step, self.calls))
        return super().train_step(batch)

    def fit_counting_calls(self, fold: int = 0) -> None:
        """One fit with every Python and C function call of this thread counted, stamped at each step."""
        def count(frame, event, arg):
            if event in ("call", "c_call"):
                self.calls += 1
        sys.setprofile(count)
        try:
            self.fit(fold)
        finally:
            sys.setprofile(None)

    def calls_per_step(self, every: int) -> list[int]:
        """Function calls per step of the last counted fit, leaving out the steps that log (step % every == 0)."""
        pairs = zip(self.stamp_calls, self.stamp_calls[1:], self.stamp_epochs, self.stamp_epochs[1:])
        return [c1 - c0 for (_, c0), (s1, c1), ea, eb in pairs if ea == eb and s1 % every]

    def step_times(self, warmup: int = 3) -> list[float]:
        """Per-step durations of the last fit over all its epochs; the steps that span validation are left out."""
        return step_times(self.stamps, warmup, self.stamp_epochs)


def step_times(stamps: list[float], warmup: int = 3, epochs: list[int] | None = None) -> list[float]:
    """Per-step durations from consecutive stamps after `warmup`; given each stamp's epoch, none spans two."""
    epochs = epochs if epochs is not None else [0] * len(stamps)
    pairs = zip(stamps[warmup:], stamps[warmup + 1:], epochs[warmup:], epochs[warmup + 1:])
    return [b - a for a, b, ea, eb in pairs if ea == eb]


def median(xs: list[float]) -> float:
    """The median of a non-empty list."""
    return statistics.median(xs)


def machine() -> str:
    """The CPU model, core count and torch version, for the results table."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"
