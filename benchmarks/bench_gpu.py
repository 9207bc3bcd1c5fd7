"""GPU throughput: the kit's Trainer against timm's own benchmark loop, side by side, on one GPU.

    python -m benchmarks.bench_gpu [--model=resnet50 --img_size=224 --batch_size=256 --steps=40 --rounds=3]

The reference arm is timm's `benchmark.py --bench train|infer` loop (synthetic data already on the
GPU, channels_last, bf16 autocast, SGD) written out here, because benchmark.py ships in timm's
repository and not in its wheel, and the GPU machine has no network. The kit arm is a real
`Trainer.fit` / `predict_loader` on in-memory images of the same shape. Arms alternate; warm-up
steps are dropped; medians are compared. Targets: kit / timm images/s >= 0.95, train and infer.
"""
from __future__ import annotations

import os
import tempfile
import time

import fire
import timm
import torch
from torch import nn

from kit import Config

from .common import MemoryImages, TimedTrainer, demo_competition, median, step_times

WARMUP = 5


def timm_train_rate(model_name: str, batch: int, size: int, steps: int) -> float:
    """Images/s of timm's benchmark train loop (bf16 autocast, channels_last, SGD, data on the GPU)."""
    model = timm.create_model(model_name, pretrained=False, num_classes=10).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss().cuda()
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device="cuda")
    model.train()
    stamps = []
    for _ in range(steps + WARMUP):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    stamps.append(time.perf_counter())
    return batch / median(step_times(stamps, WARMUP))


@torch.no_grad()
def timm_infer_rate(model_name: str, batch: int, size: int, steps: int) -> float:
    """Images/s of timm's benchmark inference loop (eval, bf16 autocast, channels_last)."""
    model = timm.create_model(model_name, pretrained=False, num_classes=10).cuda().to(memory_format=torch.channels_last)
    model.eval()
    x = torch.randn(batch, 3, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    for _ in range(WARMUP):
        model(x)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(x)
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def kit_rates(trainer: TimedTrainer, batch: int) -> tuple[float, float]:
    """Images/s of one kit fold (train steps) and of the kit's prediction over the valid set."""
    trainer.fit(0)
    train = batch / median(step_times(trainer.stamps, WARMUP))
    from kit.data import build_loader
    loader = trainer.accelerator.prepare_data_loader(build_loader(trainer.valid_data, batch, 0, shuffle=False))
    trainer.model = trainer.accelerator.prepare(trainer.build_model().to(memory_format=torch.channels_last))
    trainer.predict_loader(loader)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.predict_loader(loader)
    torch.cuda.synchronize()
    infer = len(trainer.valid_data) / (time.perf_counter() - t0)
    trainer.release()
    return train, infer


def bench(model: str = "resnet50", img_size: int = 224, batch_size: int = 256, steps: int = 40,
          rounds: int = 3) -> dict:
    """Print and return kit/timm train and inference images/s ratios on this GPU."""
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA GPU")
    os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    cfg = Config(comp=str(demo_competition()), model=model, img_size=img_size, batch_size=batch_size, epochs=1,
                 num_workers=0, predict_test=False, channels_last=True, optimizer="sgd", lr=1e-4, clip_grad=0.0,
                 out_dir=tempfile.mkdtemp(), name="bench_gpu", log_with="none", resume="never")
    # uint8 images, as the kit's pipelines give them: moved as bytes, normalised on the GPU in the step
    trainer = TimedTrainer(cfg, MemoryImages(batch_size * (steps + WARMUP + 1), img_size, uint8=True),
                           MemoryImages(batch_size * 8, img_size, seed=1, uint8=True))
    kit_train, kit_infer, ref_train, ref_infer = [], [], [], []
    for _ in range(rounds):
        t, i = kit_rates(trainer, batch_size)
        kit_train.append(t)
        kit_infer.append(i)
        ref_train.append(timm_train_rate(model, batch_size, img_size, steps))
        ref_infer.append(timm_infer_rate(model, batch_size, img_size, steps))
    out = {"gpu": torch.cuda.get_device_name(0), "kit_train": median(kit_train), "timm_train": median(ref_train),
           "kit_infer": median(kit_infer), "timm_infer": median(ref_infer)}
    out["train_ratio"] = out["kit_train"] / out["timm_train"]
    out["infer_ratio"] = out["kit_infer"] / out["timm_infer"]
    print(f"GPU {out['gpu']} {model} {img_size}px bf16 channels_last batch {batch_size}: train kit "
          f"{out['kit_train']:.0f} vs timm {out['timm_train']:.0f} img/s (ratio {out['train_ratio']:.3f}); infer kit "
          f"{out['kit_infer']:.0f} vs timm {out['timm_infer']:.0f} img/s (ratio {out['infer_ratio']:.3f}); target >= 0.95")
    return out


if __name__ == "__main__":
    fire.Fire(bench)
