"""The loader: single-threaded workers, uint8 batches normalised on the device, and the shared image cache."""
import os
import re

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from kit.data import build_loader


class ThreadCounts(Dataset):
    """Each row reports the OpenCV and torch thread counts of the process that loads it."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"cv2": cv2.getNumThreads(), "torch": torch.get_num_threads(), "index": i}


def test_loader_workers_run_single_threaded():
    torch_threads = torch.get_num_threads()
    batches = list(build_loader(ThreadCounts(), batch_size=2, num_workers=2, shuffle=False))
    assert sorted(torch.cat([b["index"] for b in batches]).tolist()) == list(range(8))
    assert {int(v) for b in batches for v in b["cv2"]} == {1}, "OpenCV threads in a worker"
    assert {int(v) for b in batches for v in b["torch"]} == {1}, "torch threads in a worker"
    assert torch.get_num_threads() == torch_threads  # the main process keeps its own setting


def test_uint8_batches_reach_the_model_normalised_exactly_as_the_cpu_pipeline(demo_copy, tmp_path, monkeypatch,
                                                                             capsys):
    from kit import Config, Trainer
    from kit.data import read_image
    from kit.transforms import build_eval_transforms
    seen = {"train": [], "eval": []}

    class Capture(Trainer):
        def build_datasets(self, fold):
            self.built = super().build_datasets(fold)
            return self.built

        def train_step(self, batch):
            seen["train"].append((batch["image"].clone(), batch["index"].clone()))
            return super().train_step(batch)

        def eval_step(self, batch):
            seen["eval"].append((batch["image"].clone(), batch["index"].clone()))
            return super().eval_step(batch)

    cfg = Config(comp=str(demo_copy), out_dir=str(tmp_path), model="test_resnet", img_size=32, aug="none", epochs=1,
                 limit=60, num_workers=0, batch_size=16, predict_test=False, log_with="none", resume="never")
    trainer = Capture(cfg)
    trainer.fit(0)
    # both loaders read through the shared image cache (it fits: the demo is small)
    assert all(ds.cache is not None for ds in trainer.built)
    train, valid = trainer.build_datasets(0)
    assert train[0]["image"].dtype == torch.uint8  # what the loader moves: a quarter of float32's bytes
    cpu = build_eval_transforms(32, trainer.norm)  # `none` = resize, normalise (the model's own), tensor, on the CPU
    for split, ds in (("train", train), ("eval", valid)):
        images, index = seen[split][0]
        want = torch.stack([cpu(image=read_image(ds.paths[i]))["image"] for i in index.tolist()])
        assert images.dtype == torch.float32 and torch.equal(images, want), split
    # a cache over the budget is not made, and the run says so
    monkeypatch.setattr("kit.image_cache.cache_budget", lambda: 0)
    trainer.fit(1)
    assert all(ds.cache is None for ds in trainer.built)
    said = capsys.readouterr().out
    assert re.search(r"fold 1: train images are not cached \(\d+ MiB decoded is over the 0 MiB budget\)", said), said


def test_num_workers_defaults_to_the_cpus_this_process_may_use_shared_by_its_processes():
    import subprocess
    import sys

    from kit.config import Config
    from kit.data import resolve_workers

    assert Config().num_workers == -1  # auto
    for explicit in (0, 1, 3, 16):
        assert resolve_workers(explicit, cpus=1) == explicit  # an explicit value is kept
    for cpus, procs, want in ((1, 1, 0), (2, 1, 2), (2, 2, 0), (4, 2, 2), (16, 1, 8), (64, 4, 8), (12, 4, 3)):
        assert resolve_workers(-1, cpus=cpus, local_processes=procs) == want, (cpus, procs)
    # for real: pin a process to one CPU, then to every CPU, as taskset/cgroups/SLURM do; a DataLoader is built
    probe = ("import os, sys, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))} if sys.argv[1] == '1' "
             "else os.sched_getaffinity(0)); from kit.config import Config; from kit.data import build_loader; "
             "print(build_loader(torch.utils.data.TensorDataset(torch.zeros(4)), 2, Config().num_workers, False)"
             ".num_workers)")
    env = {**os.environ, "LOCAL_WORLD_SIZE": "1"}
    for pin, want in (("1", 0), ("all", resolve_workers(-1, cpus=len(os.sched_getaffinity(0)), local_processes=1))):
        out = subprocess.run([sys.executable, "-c", probe, pin], capture_output=True, text=True, env=env, check=True)
        assert int(out.stdout.strip()) == want, (pin, out.stdout, out.stderr[-2000:])


def _demo_rows(demo_dir, n=40):
    import pandas as pd
    ids = pd.read_csv(demo_dir / "train.csv", dtype=str)["id"].tolist()[:n]
    return [demo_dir / "train" / f"{i}.png" for i in ids]


def _epochs(ds, epochs=2, files=None):
    """Every batch image of `epochs` seeded epochs through 2 persistent workers; the files go after epoch 0."""
    loader = build_loader(ds, batch_size=8, num_workers=2, shuffle=True, seed=0)
    out = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        out += [(b["index"], b["image"]) for b in loader]
        if files is not None and epoch == 0:
            for p in files:
                p.unlink()
    return out


def test_images_are_decoded_once_into_shared_memory_and_the_batches_do_not_change(demo_copy):
    from kit.data import ImageDataset, read_image
    from kit.image_cache import attach_cache
    from kit.transforms import build_train_transforms
    paths = _demo_rows(demo_copy)
    ds = {}
    for mode in ("off", "auto"):
        ds[mode] = ImageDataset(paths, [0] * len(paths), build_train_transforms("medium", 32, normalize=False))
        ds[mode].seed_augmentation(0)
        assert attach_cache(ds[mode], mode) == ""
    assert ds["off"].cache is None and ds["auto"].cache is not None
    want = [read_image(p) for p in paths]
    plain = _epochs(ds["off"])
    # the workers fill the cache in epoch 0; epoch 1 reads no file (they are gone) and draws the same batches
    cached = _epochs(ds["auto"], files=paths)
    assert not any(p.exists() for p in paths)
    assert len(cached) == len(plain) == 2 * len(paths) // 8
    for (i, a), (j, b) in zip(plain, cached):
        assert torch.equal(i, j) and torch.equal(a, b)
    cache = ds["auto"].cache
    assert bool(cache.filled.all()), "rows decoded by the workers are seen by the main process"
    for k, image in enumerate(want):
        assert np.array_equal(cache.get(k), image), k


def test_the_cache_keeps_images_of_any_size_and_is_safe_from_in_place_transforms(tmp_path):
    import albumentations as A
    from PIL import Image

    from kit.data import ImageDataset, read_image
    from kit.image_cache import ImageCache, attach_cache, plan_cache

    paths = []
    for k, (h, w) in enumerate(((12, 12), (20, 9), (7, 30))):  # three sizes
        paths.append(tmp_path / f"{k}.png")
        cv2.imwrite(str(paths[-1]), np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8))
    # a photo whose EXIF says "turn 90 degrees": the header is 16 x 10, OpenCV decodes it as 10 x 16
    paths.append(tmp_path / "turned.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (10, 16, 3), dtype=np.uint8)).save(paths[-1], exif=exif)
    assert read_image(paths[-1]).shape == (16, 10, 3)

    def blacken(image, **_):
        image[:] = 0  # writes into the array it is given
        return image

    ds = ImageDataset(paths, None, A.Compose([A.Lambda(image=blacken)]))
    assert attach_cache(ds, "auto") == ""
    for _ in range(2):
        assert all(int(ds[k]["image"].max()) == 0 for k in range(len(paths)))
    for k, path in enumerate(paths):
        assert np.array_equal(ds.cache.get(k), read_image(path)), f"row {k}: missing, or altered in place"
    # an image that does not fill its slot (the header said another size) is not kept, and is decoded every time
    slot = ImageCache([12 * 12 * 3])
    slot.put(0, read_image(paths[1]))
    assert slot.get(0) is None
    # over the budget: no cache, and the reason says how much was asked
    cache, why = plan_cache([12 * 12 * 3] * 10_000, budget=2**20)
    assert cache is None and why == "4 MiB decoded is over the 1 MiB budget"
    fresh = ImageDataset(paths, None, None)
    with pytest.raises(ValueError, match="--image_cache='always'"):
        attach_cache(fresh, "always")
