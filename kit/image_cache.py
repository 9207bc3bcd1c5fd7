"""Decoded images kept in shared memory: each file is decoded once per fit, not once per epoch and worker."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .data import ImageDataset

MEMORY_SHARE = 4  # an auto cache takes at most 1/4 of the memory available when it is made
SHM_SHARE = 2  # and at most 1/2 of /dev/shm's free space (DataLoader workers pass batches through it too)


class ImageCache:
    """One uint8 slot per row, all of the first image's shape, in shared memory that forked and spawned
    DataLoader workers write and read; a row of another shape is not kept (it is decoded every time)."""

    def __init__(self, n: int, shape: tuple):
        self.shape = tuple(shape)
        # committed now (a copy into /dev/shm), so the next cache's budget already counts this one
        self.pixels = torch.empty((n, *self.shape), dtype=torch.uint8).share_memory_()
        self.filled = torch.zeros(n, dtype=torch.bool).share_memory_()  # set after a row's pixels are written

    def get(self, i: int) -> np.ndarray | None:
        """Row i's decoded image, or None when no loader process has decoded it yet."""
        return self.pixels[i].numpy() if self.filled[i] else None

    def put(self, i: int, image: np.ndarray) -> None:
        """Keep row i's decoded image (two processes writing the same row write the same bytes)."""
        if image.shape == self.shape:
            self.pixels[i] = torch.from_numpy(image)
            self.filled[i] = True


def memory_available() -> int:
    """Bytes of memory the kernel says can be used without swapping (MemAvailable), 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def shm_free(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory mount that holds the cache; None where there is none (not Linux)."""
    try:
        st = os.statvfs(path)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def cache_budget() -> int:
    """Bytes a new auto cache may take: a share of free memory and of /dev/shm, split among this machine's
    training processes."""
    budget = memory_available() // MEMORY_SHARE
    shm = shm_free()
    if shm is not None:
        budget = min(budget, shm // SHM_SHARE)
    return budget // max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)


def plan_cache(n: int, first: np.ndarray, budget: int | None = None) -> tuple[ImageCache | None, str]:
    """(a cache for n rows shaped like `first`, "") when they fit the budget, else (None, why not)."""
    need = n * first.nbytes
    budget = cache_budget() if budget is None else budget
    if need > budget:
        return None, f"{need / 2**20:.0f} MiB decoded is over the {max(budget, 0) / 2**20:.0f} MiB budget"
    return ImageCache(n, first.shape), ""


CACHE_MODES = ("auto", "off")


def attach_cache(ds, mode: str) -> str:
    """Give an ImageDataset a shared cache of its decoded rows (`--image_cache=auto`: when they fit
    `cache_budget`); returns why it has none, or "" (cached, off, or not an ImageDataset)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"--image_cache={mode!r}: choose from {', '.join(CACHE_MODES)}")
    if mode == "off" or not isinstance(ds, ImageDataset) or not len(ds) or ds.cache is not None:
        return ""
    first = ds.read(0)
    cache, why_not = plan_cache(len(ds), first)
    if cache is not None:
        cache.put(0, first)
        ds.cache = cache
    return why_not
