"""Decoded images kept in shared memory: each file is decoded once per fit, not once per epoch and worker."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .data import ImageDataset

MEMORY_SHARE = 4  # an auto cache takes at most 1/4 of the memory available when it is made
SHM_SHARE = 2  # and at most 1/2 of /dev/shm's free space (DataLoader workers pass batches through it too)
CHANNELS = 3  # read_image always decodes to RGB uint8


class ImageCache:
    """One slot per row, sized from the file's header, in shared memory that forked and spawned DataLoader
    workers write and read; a decoded image that does not fill its slot exactly is not kept."""

    def __init__(self, slot_bytes: list[int]):
        self.offsets = np.concatenate([[0], np.cumsum(slot_bytes, dtype=np.int64)])
        # committed now (a copy into /dev/shm), so the next cache's budget already counts this one
        self.pixels = torch.empty(int(self.offsets[-1]), dtype=torch.uint8).share_memory_()
        self.shapes = torch.zeros((len(slot_bytes), 3), dtype=torch.int32).share_memory_()
        self.filled = torch.zeros(len(slot_bytes), dtype=torch.bool).share_memory_()  # set after the pixels

    def _arrays(self) -> tuple:
        # numpy views of the shared tensors, made once per process (a pickled cache makes its own: __getstate__)
        if getattr(self, "_views", None) is None:
            self._views = self.pixels.numpy(), self.shapes.numpy(), self.filled.numpy()
        return self._views

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_views": None}

    def get(self, i: int) -> np.ndarray | None:
        """Row i's decoded image, or None when no loader process has decoded it yet."""
        pixels, shapes, filled = self._arrays()
        if not filled[i]:
            return None
        return pixels[self.offsets[i]:self.offsets[i + 1]].reshape(shapes[i])

    def put(self, i: int, image: np.ndarray) -> None:
        """Keep row i's decoded image (two processes writing the same row write the same bytes)."""
        pixels, shapes, filled = self._arrays()
        a, b = self.offsets[i], self.offsets[i + 1]
        if image.dtype == np.uint8 and image.ndim == 3 and image.nbytes == b - a:  # an EXIF turn swaps h and w
            pixels[a:b] = image.reshape(-1)
            shapes[i] = image.shape
            filled[i] = True


def header_bytes(path: str) -> int:
    """Bytes the file decodes to as RGB uint8, from its header alone; 0 when the header cannot be read."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception:  # noqa: BLE001 - a file PIL cannot open is simply not cached (OpenCV may still read it)
        return 0
    return width * height * CHANNELS


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


def plan_cache(slot_bytes: list[int], budget: int | None = None) -> tuple[ImageCache | None, str]:
    """(a cache with these slots, "") when they fit the budget, else (None, why not)."""
    need = int(sum(slot_bytes))
    budget = cache_budget() if budget is None else budget
    if need > budget:
        return None, f"{need / 2**20:.0f} MiB decoded is over the {max(budget, 0) / 2**20:.0f} MiB budget"
    return ImageCache(slot_bytes), ""


CACHE_MODES = ("auto", "off")


def attach_cache(ds, mode: str) -> str:
    """Give an ImageDataset a shared cache of its decoded rows (`--image_cache=auto`: when they fit
    `cache_budget`); returns why it has none, or "" (cached, off, or not an ImageDataset)."""
    if mode not in CACHE_MODES:
        raise ValueError(f"--image_cache={mode!r}: choose from {', '.join(CACHE_MODES)}")
    if mode == "off" or not isinstance(ds, ImageDataset) or not len(ds) or ds.cache is not None:
        return ""
    with ThreadPoolExecutor(min(16, (os.cpu_count() or 1) * 2)) as pool:  # headers only: file reads, not decoding
        slots = list(pool.map(header_bytes, ds.paths, chunksize=256))
    cache, why_not = plan_cache(slots)
    ds.cache = cache
    return why_not
