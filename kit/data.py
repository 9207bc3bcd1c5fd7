"""Image-classification data: a dataset over a table of ids and an image folder, and its loader."""
from __future__ import annotations

import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array; raise naming the path if it cannot."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: cannot read or decode image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class ImageDataset(Dataset):
    """Rows of (image path, target) -> dict(image, target, index); index maps back to the id."""

    def __init__(self, paths: list, targets=None, transform=None, view_seed: int | None = None):
        self.paths = [str(p) for p in paths]
        self.targets = None if targets is None else torch.tensor(np.array(targets))
        self.transform = transform
        self.view_seed = view_seed  # set: a random pipeline gives each image one fixed view (seed + index)
        self.aug_seed = None  # set (training): each row's augmentation is drawn from (seed, epoch, row)
        self.cache = None  # an ImageCache (kit/image_cache.py): decoded rows shared by every loader process
        # shared memory, so DataLoader workers (persistent ones too) see the epoch the main process sets
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def seed_augmentation(self, seed: int) -> None:
        """Make augmentation a function of (seed, epoch, row): reproducible and exactly resumable."""
        self.aug_seed = seed

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next rows are drawn for (also called by Accelerate's loader)."""
        self._epoch[0] = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def seed_transform(self, i: int) -> None:
        """Seed the pipeline for row i: its one fixed view (view_seed), or its (seed, epoch, row) draw in training."""
        if self.view_seed is not None:
            seed_pipeline(self.transform, self.view_seed + i)
        elif self.aug_seed is not None:
            seed_pipeline(self.transform, row_seed(self.aug_seed, int(self._epoch[0]), i))

    def read(self, i: int) -> np.ndarray:
        """Row i's decoded RGB image: from the cache once any loader process decoded it, else from its file."""
        cache = self.cache
        image = None if cache is None else cache.get(i)
        if image is not None:
            return image.copy()  # the pipeline gets its own array: no transform can alter the cached pixels
        image = read_image(self.paths[i])
        if cache is not None:
            cache.put(i, image)
        return image

    def __getitem__(self, i: int) -> dict:
        image = self.read(i)
        if self.transform is not None:
            self.seed_transform(i)
            image = self.transform(image=image)["image"]
        item = {"image": image, "index": i}
        if self.targets is not None:
            item["target"] = self.targets[i]
        return item


def seed_pipeline(pipeline, seed: int) -> None:
    """Draw the pipeline's next call from `seed`: one numpy and one Python generator shared by every transform."""
    # Compose.set_random_seed builds two generators per transform, which costs more than the augmentation itself.
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))


def row_seed(seed: int, epoch: int, i: int) -> int:
    """A 32-bit seed that differs for every (seed, epoch, row)."""
    return ((seed * 1_000_003 + epoch) * 2_654_435_761 + i) % 2**32


def _init_worker(_: int) -> None:
    # Each worker is one process already: OpenCV's own threads would oversubscribe the cores.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


MAX_AUTO_WORKERS = 8  # past this, more workers rarely feed a GPU faster and each costs memory


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what taskset, cgroups cpusets and SLURM allow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call (macOS, Windows)
        return os.cpu_count() or 1


def resolve_workers(num_workers: int, cpus: int | None = None, local_processes: int | None = None) -> int:
    """DataLoader workers for `--num_workers`: an explicit value (>= 0) as given; -1 (auto, any negative) shares
    this machine's usable CPUs among its training processes: min(8, cpus // processes per machine), and 0
    (load in the main process) when that leaves a process a single CPU."""
    if num_workers >= 0:
        return int(num_workers)
    cpus = usable_cpus() if cpus is None else cpus
    local = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if local_processes is None else local_processes
    share = cpus // max(local, 1)
    return 0 if share <= 1 else min(MAX_AUTO_WORKERS, share)


def build_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, sampler=None) -> DataLoader:
    """A DataLoader with seeded shuffling (or the given sampler) and single-threaded workers (-1: resolve_workers)."""
    num_workers = resolve_workers(num_workers)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last,
        pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
        worker_init_fn=_init_worker, generator=generator,
    )
