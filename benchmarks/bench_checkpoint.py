"""Checkpoint cost on the demo: seconds per crash-safe checkpoint against seconds per epoch, and resume time.

    python -m benchmarks.bench_checkpoint [--epochs=3]

Trains the demo baseline (resnet18, 32 px, the real images and augmentation) in this process,
timing every checkpoint write (save_state + extras + fsync + rename) and every epoch, then
resumes the finished run and times the restore (load_state + extras). Medians are reported.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import fire

import kit.resume as resume_mod
import kit.trainer as trainer_mod
from kit import Config, Trainer
from kit.checkpoint import newest_complete

from .common import demo_competition


class Exp(Trainer):
    config = Config(model="resnet18", img_size=32, batch_size=32, lr=2e-3, predict_test=False, name="bench_ckpt")


def _timed(module, name: str, log: list):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        out = real(*args, **kwargs)
        log.append(time.perf_counter() - t0)
        return out

    setattr(module, name, wrapper)
    return real


def bench(epochs: int = 3, num_workers: int = 2) -> dict:
    """Train the demo, timing checkpoint writes, epochs and the resume; print and return the medians."""
    os.environ.setdefault("WANDB_MODE", "offline")
    comp, out = demo_competition(), Path(tempfile.mkdtemp(prefix="kit-ckpt-"))
    cfg = Exp.config.override(comp=str(comp), out_dir=str(out), epochs=epochs, num_workers=num_workers, ckpt_every=0,
                              keep_fold_ckpts=True)
    saves, loads = [], []
    real_write = _timed(resume_mod, "write_checkpoint", saves)
    real_restore = _timed(trainer_mod, "restore_run", loads)
    try:
        Exp(cfg).fit(0)
        last, _ = newest_complete(out / "bench_ckpt" / "fold0" / "checkpoints")  # named: a finished fold is skipped
        Exp(cfg.override(resume=str(last.path))).fit(0)
    finally:
        resume_mod.write_checkpoint, trainer_mod.restore_run = real_write, real_restore
    rows = [json.loads(r) for r in (out / "bench_ckpt" / "fold0" / "metrics.jsonl").read_text().splitlines()]
    epoch_s = statistics.median(r["seconds"] for r in rows)
    ckpt = next((out / "bench_ckpt" / "fold0" / "checkpoints").iterdir())
    size_mb = sum(f.stat().st_size for f in ckpt.iterdir()) / 1e6
    result = {"save_s": statistics.median(saves), "epoch_s": epoch_s, "resume_s": loads[-1], "size_mb": size_mb}
    result["save_over_epoch"] = result["save_s"] / epoch_s
    print(f"checkpoint {size_mb:.1f} MB: save {result['save_s']:.3f} s, epoch {epoch_s:.2f} s "
          f"(save/epoch {result['save_over_epoch']:.3f}), resume {result['resume_s']:.3f} s")
    return result


if __name__ == "__main__":
    fire.Fire(bench)
