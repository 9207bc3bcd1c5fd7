"""Data pipeline: the kit's real loader (PNG decode + albumentations, default workers and image cache) against the step.

    python -m benchmarks.bench_data [--rounds=16 --epochs=3 --img_size=32 --batch_size=32]

Three figures on the demo competition: the loader alone in images/s; the training step rate in
images/s; and the per-step time with the real loader over the per-step time with pre-collated
in-memory batches of the same shape (target <= 1.05: the model never waits for data).
Arms alternate round by round (a round is one fit of `epochs` epochs); round 0 is warm-up; the
medians of all later steps are compared (steps that span a validation pass are left out). The real
arm decodes every image in a fit's first epoch and reads later epochs from the shared image cache
(`--image_cache=auto`), as training does: the ratio is also given for each, and the loader's CPU per
batch for both.
"""
from __future__ import annotations

import tempfile
import time

import cv2
import fire
import torch

from kit import Config
from kit.data import ImageDataset, build_loader, resolve_workers
from kit.image_cache import attach_cache

from .common import MemoryImages, TimedTrainer, demo_competition, median, step_times


def loader_rate(trainer: TimedTrainer, batch_size: int, workers: int) -> float:
    """Images/s of the real train loader alone, from its first batch to its last (workers already up)."""
    train, _ = trainer.build_datasets(0)
    loader = build_loader(train, batch_size, workers, shuffle=True, seed=0)
    it = iter(loader)
    n, t0 = 0, None
    for batch in it:
        if t0 is None:
            t0 = time.perf_counter()
            continue
        n += len(batch["image"])
    return n / (time.perf_counter() - t0)


def loader_cpu_ms(trainer: TimedTrainer, batch_size: int, cached: bool) -> float:
    """CPU ms to decode (or take from the filled image cache), augment and collate one train batch, in this
    process (what a worker spends on it)."""
    train, _ = trainer.build_datasets(0)
    train.seed_augmentation(0)  # per-row seeding as in training
    threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(0)  # one thread, as in a worker (process time would count idle pool threads spinning)
    torch.set_num_threads(1)
    try:
        if cached:
            attach_cache(train, "auto")
            for _ in build_loader(train, batch_size, 0, shuffle=True, seed=0):  # a first epoch fills it
                pass
        it = iter(build_loader(train, batch_size, 0, shuffle=True, seed=0))
        next(it)
        n, t0 = 0, time.process_time()
        for _ in it:
            n += 1
        return (time.process_time() - t0) / n * 1e3
    finally:
        cv2.setNumThreads(threads[0])
        torch.set_num_threads(threads[1])


def first_and_later(trainer: TimedTrainer) -> tuple[list[float], list[float]]:
    """Step times of the last fit's first epoch (images decoded) and of its later ones (from the image cache)."""
    k = trainer.stamp_epochs.count(trainer.stamp_epochs[0])
    return (step_times(trainer.stamps[:k], 3, trainer.stamp_epochs[:k]),
            step_times(trainer.stamps[k:], 0, trainer.stamp_epochs[k:]))


def bench(rounds: int = 16, img_size: int = 32, batch_size: int = 32, model: str = "resnet18", epochs: int = 3,
          aug: str = "light") -> dict:
    """Print and return the loader rate, step rate and real/pre-collated step-time ratio."""
    comp = str(demo_competition())
    base = dict(comp=comp, model=model, img_size=img_size, batch_size=batch_size, epochs=epochs, aug=aug,
                predict_test=False, out_dir=tempfile.mkdtemp(), log_with="none",
                resume="never")  # every round trains from scratch
    real = TimedTrainer(Config(name="bench_real", **base))  # default num_workers
    workers = resolve_workers(real.config.num_workers)  # -1 (auto) as the loaders resolve it
    train = real.build_datasets(0)[0]
    if not isinstance(train, ImageDataset):  # the real arm must decode and augment, or the ratio means nothing
        raise TypeError(f"real arm trains on {type(train).__name__}, not the kit's ImageDataset")
    n_train = len(train)
    uint8 = train[0]["image"].dtype == torch.uint8  # both arms then normalise on the device, in the step
    collated = TimedTrainer(Config(name="bench_collated", num_workers=0, **base),
                            MemoryImages(n_train, img_size, uint8=uint8), MemoryImages(batch_size, img_size, seed=1,
                                                                                       uint8=uint8))
    real_t, coll_t, rates, per_round = [], [], [], []
    first_t, later_t, coll_first, coll_later = [], [], [], []  # each arm's first epoch, and its later ones
    for r in range(rounds + 1):
        real.fit(0)
        collated.fit(0)
        if r:  # before loader_rate: building the datasets again starts new stamps
            real_r, coll_r = real.step_times(), collated.step_times()
            real_t += real_r
            coll_t += coll_r
            for arm, split in ((real, (first_t, later_t)), (collated, (coll_first, coll_later))):
                for into, times in zip(split, first_and_later(arm)):
                    into += times
            per_round.append(median(real_r) / median(coll_r))
        rates.append(loader_rate(real, batch_size, workers))
    ratio = median(real_t) / median(coll_t)
    ratio_first, ratio_later = median(first_t) / median(coll_first), median(later_t) / median(coll_later)
    # were every core busy with the step, each worker millisecond would be taken from it: 1 + cpu/step; the step's
    # own idle moments (Python, synchronisation) let the measured ratio come in under that
    cpu = [(loader_cpu_ms(real, batch_size, cached=False), loader_cpu_ms(real, batch_size, cached=True))
           for _ in range(5)]  # alternating, so both see the same machine
    decode_ms, cached_ms = median([d for d, _ in cpu]), median([c for _, c in cpu])
    cpu_ms = (decode_ms + (epochs - 1) * cached_ms) / epochs  # what the real arm's epochs spend on average
    no_idle = 1 + cpu_ms / (median(coll_t) * 1e3)
    print("data pipeline, real / pre-collated by round:", " ".join(f"{x:.3f}" for x in per_round))
    step_rate = batch_size / median(coll_t)
    print(f"data pipeline ({aug} at {img_size}px, batch {batch_size}, {workers} workers): loader alone "
          f"{median(rates[1:]):.0f} img/s, train step {step_rate:.0f} img/s (loader/step {median(rates[1:]) / step_rate:.1f}x); "
          f"step with real loader / pre-collated {ratio:.3f} (target <= 1.05; first epoch {ratio_first:.3f}, later "
          f"epochs {ratio_later:.3f}); loader CPU {decode_ms:.1f} ms per batch "
          f"decoding, {cached_ms:.1f} ms from the image cache, against a {median(coll_t) * 1e3:.0f} ms step: "
          f"{no_idle:.3f} if the step left no core idle")
    return {"ratio": ratio, "ratio_first": ratio_first, "ratio_later": ratio_later, "loader_img_s": median(rates[1:]),
            "step_img_s": step_rate, "decode_ms": decode_ms, "cached_ms": cached_ms, "no_idle": no_idle}


if __name__ == "__main__":
    fire.Fire(bench)
