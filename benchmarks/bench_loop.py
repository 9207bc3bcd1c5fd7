"""Loop overhead: the kit's Trainer against a hand-written Accelerate loop, side by side.

    python -m benchmarks.bench_loop loop [--steps=24 --rounds=5 --grad_accum=1]
    python -m benchmarks.bench_loop logging [--steps=60 --every=50]

Same timm resnet18, same 64x64 in-memory data, batch 32, same seed, same optimizer and schedule.
Arms alternate round by round, each going first in every other round; round 0 and the first steps
of each round are warm-up and dropped; per-step medians are compared. Targets: ratio <= 1.03, final
weights bitwise equal.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time

import fire
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from kit import Config

from .common import MemoryImages, TimedTrainer, demo_competition, median, step_times


def hand_loop(cfg: Config, data: MemoryImages) -> tuple[dict, list[float]]:
    """The textbook Accelerate loop; returns final weights and per-step stamps."""
    set_seed(cfg.seed)
    acc = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    import timm
    model = timm.create_model(cfg.model, pretrained=False, num_classes=10, drop_rate=cfg.drop_rate)
    opt = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the kit shuffles epoch e with a generator of its own seeded seed + 100_003 * e (kit/resume.py)
    loader = DataLoader(data, batch_size=cfg.batch_size,
                        sampler=RandomSampler(data, generator=torch.Generator().manual_seed(cfg.seed)))
    model, opt, loader = acc.prepare(model, opt, loader)
    sched, _ = create_scheduler_v2(opt, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                   warmup_lr=cfg.lr / 100, min_lr=cfg.min_lr, step_on_epochs=False,
                                   updates_per_epoch=math.ceil(len(loader) / cfg.grad_accum))
    loss_fn, step, stamps = nn.CrossEntropyLoss(), 0, []
    model.train()
    for batch in loader:
        stamps.append(time.perf_counter())
        with acc.accumulate(model):
            loss = loss_fn(model(batch["image"]), batch["target"])
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            opt.step()
            opt.zero_grad(set_to_none=True)
        if acc.sync_gradients:
            step += 1
            sched.step_update(num_updates=step)
    state = {k: v.detach().clone() for k, v in acc.unwrap_model(model).state_dict().items()}
    return state, stamps


def kit_loop(trainer: TimedTrainer) -> tuple[dict, list[float]]:
    """One fold of the kit's Trainer; returns its saved weights and per-step stamps."""
    trainer.fit(0)
    return load_file(str(trainer.fold_dir / "best.safetensors")), trainer.stamps


def bench(steps: int = 24, rounds: int = 5, grad_accum: int = 1, size: int = 64, batch: int = 32,
          model: str = "resnet18", **overrides) -> dict:
    """Print and return the kit/hand per-step median ratio and whether final weights are bitwise equal."""
    data = MemoryImages(steps * batch, size)
    cfg = Config(comp=str(demo_competition()), model=model, img_size=size, batch_size=batch, epochs=1,
                 num_workers=0, predict_test=False, grad_accum=grad_accum, out_dir=tempfile.mkdtemp(),
                 name="bench_loop", log_with="none", resume="never")  # every round trains from scratch
    cfg = dataclasses.replace(cfg, **overrides)
    trainer = TimedTrainer(cfg, data, MemoryImages(batch, size, seed=1))
    kit_t, hand_t, equal = [], [], None
    for r in range(rounds + 1):
        if r % 2:  # neither arm always goes first
            hand_w, hand_s = hand_loop(cfg, data)
            kit_w, kit_s = kit_loop(trainer)
        else:
            kit_w, kit_s = kit_loop(trainer)
            hand_w, hand_s = hand_loop(cfg, data)
        if r == 0:  # warm-up round: allocator, kernels, page cache; weights still compared
            equal = kit_w.keys() == hand_w.keys() and all(torch.equal(kit_w[k], hand_w[k]) for k in kit_w)
            continue
        kit_t += step_times(kit_s)
        hand_t += step_times(hand_s)
    ratio = median(kit_t) / median(hand_t)
    label = f"accum {grad_accum}" + "".join(f", {k}={v}" for k, v in overrides.items())
    print(f"loop overhead ({model} {size}px batch {batch}, {label}): kit {median(kit_t) * 1e3:.1f} ms/step, "
          f"hand {median(hand_t) * 1e3:.1f} ms/step, ratio {ratio:.3f} (target <= 1.03); "
          f"weights bitwise equal: {equal}")
    return {"ratio": ratio, "equal": equal, "kit_ms": median(kit_t) * 1e3, "hand_ms": median(hand_t) * 1e3}


def bench_logging(steps: int = 60, rounds: int = 5, size: int = 64, batch: int = 32, model: str = "resnet18",
                  tracker: str = "tensorboard", every: int = 50, threads: int = 0) -> dict:
    """Print and return the kit's per-step median with tracker logging every `every` steps over logging off.

    Also counts the function calls of each step that does not log, in one extra fit per arm: a
    figure the machine's noise cannot move (target: no extra calls with logging on).
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    data = MemoryImages(steps * batch, size)
    base = dict(comp=str(demo_competition()), model=model, img_size=size, batch_size=batch, epochs=1, num_workers=0,
                predict_test=False, out_dir=tempfile.mkdtemp(), resume="never")
    valid = MemoryImages(batch, size, seed=1)
    arms = {"on": TimedTrainer(Config(name="log_on", log_with=tracker, log_every=every, **base), data, valid),
            "off": TimedTrainer(Config(name="log_off", log_with="none", **base), data, valid)}
    times, per_round = {k: [] for k in arms}, []
    for r in range(rounds + 1):
        for k, trainer in (arms.items() if r % 2 else reversed(arms.items())):  # neither arm always goes first
            trainer.fit(0)
            if r:
                times[k].append(trainer.step_times())
        if r:
            per_round.append(median(times["on"][-1]) / median(times["off"][-1]))
    print("logging on / off by round:", " ".join(f"{x:.3f}" for x in per_round))
    times = {k: [t for steps in v for t in steps] for k, v in times.items()}
    ratio = median(times["on"]) / median(times["off"])
    # the noise-free view: function calls on the steps that do not log must be the same in both arms
    calls = {}
    for k, trainer in arms.items():
        trainer.fit_counting_calls(0)
        calls[k] = trainer.calls_per_step(every)
    torch.set_num_threads(before)
    extra = median(calls["on"]) - median(calls["off"])
    print(f"logging ({tracker} every {every} steps) / off, {threads or before} threads: {median(times['on']) * 1e3:.1f} vs "
          f"{median(times['off']) * 1e3:.1f} ms/step, ratio {ratio:.3f} (target <= 1.02); function calls per "
          f"non-logging step {median(calls['on']):.0f} vs {median(calls['off']):.0f} (extra {extra:+.0f})")
    return {"ratio": ratio, "extra_calls": extra, "calls_off": median(calls["off"])}


if __name__ == "__main__":
    fire.Fire({"loop": bench, "logging": bench_logging})
