"""Capture and restore a training run exactly: what Accelerate's save_state keeps, plus what it misses.

Accelerate saves the model, optimizer, grad scaler and every process's Python/NumPy/torch/CUDA
RNG. This module adds the timm scheduler, the EMA weights, the epoch/step counters, the position
inside the epoch, the best score and patience, the partial epoch loss and the non-finite budget.
Data order and augmentation are functions of (seed, epoch, row) — see `begin_epoch` — so a
resumed run sees the same batches with the same augmentations as an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from .checkpoint import CheckpointError, inspect_checkpoint, newest_complete, prune_checkpoints, write_checkpoint
from .faults import fault_point
from .rundir import LOG_FILES
from .errors import KitError

STATE_FILE = "trainer_state.pt"
STEP_LOG, METRIC_LOG = LOG_FILES["steps"], LOG_FILES["metrics"]


@dataclass
class LoopState:
    """Where a fold's training loop stands: what a checkpoint adds to Accelerate's own state."""

    epoch: int = 0  # the epoch being trained
    step: int = 0  # optimizer updates applied (an fp16 step the grad scaler skipped is not one)
    pos: tuple[int, int] = (0, 0)  # (epoch, batches done in it) where the loop starts again
    best: float | None = None  # best validation score so far, and its epoch (patience counts from it)
    best_epoch: int = -1
    best_ckpt: str | None = None  # the checkpoint of the best epoch: never pruned
    stopped: bool = False  # early stopping fired: a resume has nothing left to train
    loss_sum: torch.Tensor | None = None  # the epoch's loss so far, on the device, at a mid-epoch checkpoint
    skipped_nonfinite: int = 0  # NaN/inf batches skipped so far, against --skip_nonfinite
    step_rows: list = field(default_factory=list, repr=False)  # losses not yet in steps.jsonl (never saved)

    def to_dict(self) -> dict:
        """The saved fields (the loss on the CPU); the log buffer is flushed before any save."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "step_rows"}
        out["loss_sum"] = self.loss_sum.detach().cpu() if self.loss_sum is not None else None
        return out

    @classmethod
    def from_dict(cls, saved: dict, device) -> LoopState:
        """Inverse of `to_dict`, with the partial loss back on `device`."""
        state = cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})
        state.pos = tuple(state.pos)
        state.loss_sum = state.loss_sum.to(device) if state.loss_sum is not None else None
        return state


def state_alias(name: str) -> property:
    """A Trainer attribute that reads and writes `trainer.state.<name>` (trainer.step, trainer.epoch, ...)."""
    return property(lambda t: getattr(t.state, name), lambda t, value: setattr(t.state, name, value),
                    doc=f"trainer.state.{name}")


class ResumeError(KitError, RuntimeError):
    """A checkpoint cannot be resumed from as asked; the message says why and what to do."""


class NonFiniteLoss(KitError, RuntimeError):
    """The loss became NaN/inf more often than --skip_nonfinite allows."""


def checkpoint_root(trainer) -> Path:
    """Where a fold's checkpoints live."""
    return trainer.fold_dir / "checkpoints"


def find_resume(trainer) -> Path | None:
    """The checkpoint `--resume` asks for (auto: the newest complete one), or None for a fresh start."""
    mode, acc, root = trainer.config.resume, trainer.accelerator, checkpoint_root(trainer)
    if mode == "never":
        _set_aside(trainer, "--resume=never")
        return None
    if mode != "auto":
        found = inspect_checkpoint(Path(mode))
        if not Path(mode).is_dir():
            raise ResumeError(f"--resume={mode}: no such checkpoint folder")
        if not found.complete:
            raise ResumeError(f"--resume={mode}: checkpoint is incomplete: {found.problem}")
        return found.path
    found, skipped = newest_complete(root)
    for s in skipped:
        acc.print(f"resume: skipping incomplete checkpoint {s.path}: {s.problem}")
    if found is None:
        if skipped:
            acc.print("resume: no complete checkpoint left; starting from scratch")
        return None
    adopt_backoff(trainer, found.meta.get("config", {}))
    changed = config_changes(found.meta.get("config", {}), trainer.config.to_dict())
    if changed:  # another experiment under the same name: resuming would mix two runs
        _set_aside(trainer, f"resume: the checkpoints were trained with other settings ({changed}); starting fresh "
                            f"(--resume=<checkpoint folder> continues anyway)")
        return None
    if skipped:
        acc.print(f"resume: falling back to the previous complete checkpoint {found.path}")
    return found.path


# settings that do not change the training trajectory: a resume may change them
FREE_TO_CHANGE = {"resume", "num_workers", "log_with", "predict_test", "valid_schemes", "ckpt_every", "keep_ckpts",
                  "skip_nonfinite", "out_dir", "comp", "fold", "auto_batch", "name", "keep_fold_ckpts",
                  "image_cache"}


def adopt_backoff(trainer, saved: dict) -> None:
    """With --auto_batch, take the smaller batch an earlier launch of this fold backed off to (same effective
    batch): a relaunch then neither trains a finished fold again nor restarts a resumable one at a size that
    ran out of memory."""
    cfg = trainer.config
    bs, accum = saved.get("batch_size"), saved.get("grad_accum")
    if not cfg.auto_batch or bs is None or accum is None or bs >= cfg.batch_size:
        return
    if bs * accum != cfg.batch_size * cfg.grad_accum:
        return
    trainer.config = cfg.override(batch_size=bs, grad_accum=accum)
    trainer.accelerator.gradient_accumulation_steps = accum
    trainer.accelerator.print(f"fold {trainer.fold}: --auto_batch backed off to batch_size={bs} x grad_accum={accum} "
                              f"in an earlier launch: kept")


def config_changes(saved: dict, now: dict) -> str:
    """'key: old -> new' for every training setting that differs from the checkpoint's."""
    return ", ".join(f"{k}: {saved[k]!r} -> {now.get(k)!r}" for k in sorted(saved)
                     if k not in FREE_TO_CHANGE and k in now and saved[k] != now[k])


def _set_aside(trainer, why: str) -> None:
    acc, root = trainer.accelerator, checkpoint_root(trainer)
    acc.wait_for_everyone()  # every process has read the folder before it moves
    if acc.is_main_process and root.exists():
        old = root.with_name("checkpoints.replaced")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(root, old)  # a fresh run must not later resume into the old run's states
        acc.print(f"{why}: earlier checkpoints moved to {old}")
    acc.wait_for_everyone()


def restore_run(trainer, ckpt: Path | None) -> int:
    """Load `ckpt` into the prepared trainer (or set fresh counters); return the epoch to start at."""
    trainer.state = LoopState()
    acc = trainer.accelerator
    if ckpt is None:
        if acc.is_main_process:
            (trainer.fold_dir / STEP_LOG).unlink(missing_ok=True)
        return 0
    meta = json.loads((ckpt / "COMPLETE.json").read_text())
    check_processes(meta.get("num_processes", 1), acc.num_processes, ckpt)
    acc.load_state(str(ckpt))
    state = load_state_file(ckpt / STATE_FILE)
    load_scheduler(trainer.scheduler, state["scheduler"])
    if trainer.ema is not None:
        if state["ema"] is None:
            raise ResumeError(f"{ckpt} was saved without EMA; this run has --ema_decay: resume with the same config")
        trainer.ema.load_state_dict(state["ema"])
    trainer.state = LoopState.from_dict(state, acc.device)
    changed = config_changes(state["config"], trainer.config.to_dict())
    if changed:
        acc.print(f"resume: settings differ from the checkpoint's ({changed}); the run will not match an uninterrupted one")
    if acc.is_main_process:
        trim_logs(trainer.fold_dir, trainer.state.pos)
    epoch, done = trainer.state.pos
    acc.print(f"resumed from {ckpt}: epoch {epoch}, {done} batches into it, step {trainer.state.step}")
    if trainer.state.stopped or epoch >= trainer.config.epochs:
        acc.print("resume: training had already finished; --resume=never trains again")
    return trainer.config.epochs if trainer.state.stopped else epoch


def load_state_file(path: Path) -> dict:
    """The trainer state as data only (tensors, numbers, text, lists, dicts): a planted pickle cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResumeError(f"{path}: refused to load: it holds objects other than tensors and plain values "
                          f"({first}). kit never writes such a file: it was altered. Resume from another "
                          f"checkpoint (--resume=<folder>) or start over with --resume=never") from None


def scheduler_state(scheduler) -> dict:
    """The timm scheduler's state; for plateau also torch's counters (patience, cooldown) timm leaves out."""
    state = dict(scheduler.state_dict())
    inner = getattr(scheduler, "lr_scheduler", None)
    if hasattr(inner, "state_dict"):
        state["_inner"] = inner.state_dict()
    return state


def load_scheduler(scheduler, state: dict) -> None:
    """Inverse of `scheduler_state`."""
    state = dict(state)
    inner = state.pop("_inner", None)
    scheduler.load_state_dict(state)
    if inner is not None:
        scheduler.lr_scheduler.load_state_dict(inner)


def check_processes(saved: int, now: int, ckpt: Path) -> None:
    """Refuse, clearly, a resume under a different process count (its data shards and RNG files differ)."""
    if saved != now:
        raise ResumeError(f"{ckpt} was written by {saved} process(es), this run has {now}: the data shards, "
                          f"per-process RNG states and batch positions would not line up. Resume with "
                          f"--num_processes {saved}, or start over with --resume=never.")


def trim_logs(fold_dir: Path, pos: tuple[int, int]) -> None:
    """Drop log rows written after the checkpoint (the resumed run writes them again)."""
    epoch, done = pos
    _filter_jsonl(fold_dir / METRIC_LOG, lambda r: r["epoch"] < epoch)
    _filter_jsonl(fold_dir / STEP_LOG, lambda r: (r["epoch"], r["batch"]) <= (epoch, done))


def _filter_jsonl(path: Path, keep) -> None:
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip() and keep(json.loads(line))]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r + "\n" for r in rows))
    os.replace(tmp, path)


# ------------------------------------------------------------------ inside the loop
def begin_epoch(trainer):
    """Seed this epoch's data order and augmentation from (seed, epoch); skip batches done before a resume.

    Returns (loader, number of the first batch, partial loss sum).
    """
    state, acc, seed = trainer.state, trainer.accelerator, trainer.config.seed
    epoch = state.epoch
    loader = trainer.train_loader
    loader.set_epoch(epoch)  # the sampler's epoch (balanced sampling draws per seed + epoch)
    reseed_shuffle(loader, seed + 100_003 * epoch)  # shuffling: one permutation per (seed, epoch)
    dataset = loader.dataset
    if hasattr(dataset, "seed_augmentation"):
        dataset.seed_augmentation(seed)  # each row's augmentation drawn from (seed, epoch, row)
        dataset.set_epoch(epoch)
    loss_sum = torch.zeros((), device=acc.device)
    start_epoch, done = state.pos
    if epoch == start_epoch and done:
        loader = acc.skip_first_batches(loader, done)
        loss_sum = state.loss_sum if state.loss_sum is not None else loss_sum
    state.pos = (epoch, 0)
    return loader, done + 1 if epoch == start_epoch else 1, loss_sum


def reseed_shuffle(loader, seed: int) -> None:
    """Give the loader's random sampler a fresh generator seeded with `seed`.

    The sampler gets a generator of its own: the loader's also seeds worker processes, and
    persistent workers draw from it only on the first epoch, which would shift the permutation.
    """
    sampler = loader.get_sampler() if hasattr(loader, "get_sampler") else getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        sampler.generator = torch.Generator().manual_seed(seed)
    for g in {id(x): x for x in (getattr(loader, "generator", None), getattr(loader, "synchronized_generator", None))
              if x is not None}.values():
        g.manual_seed(seed)  # worker seeds (and Accelerate's cross-process sync) from the same epoch seed


def check_loss(trainer, loss: torch.Tensor, batch: dict, n: int) -> bool:
    """Record the batch loss; with --skip_nonfinite, skip a NaN/inf batch at once (True), within the budget.

    Without it the losses stay on the device and are checked when they are flushed (every
    checkpoint and every epoch end): no host synchronisation per batch, and a NaN stops the run
    before any checkpoint or best weights are written from it.
    """
    state = trainer.state
    if fault_point("nonfinite", state.epoch * len(trainer.train_loader) + n):
        loss.data.fill_(float("nan"))
    row = {"epoch": state.epoch, "batch": n, "step": state.step, "loss": loss.detach().float(),
           "index": batch.get("index")}
    state.step_rows.append(row)
    if not trainer.config.skip_nonfinite:
        return False
    value = row["loss"].item()
    if not _any_process(trainer, not math.isfinite(value)):
        return False
    if state.skipped_nonfinite < trainer.config.skip_nonfinite:
        state.skipped_nonfinite += 1
        trainer.accelerator.print(f"non-finite loss ({value}) at {_where(trainer, row)}: batch skipped "
                                  f"({state.skipped_nonfinite}/{trainer.config.skip_nonfinite} allowed)")
        return True
    _stop_nonfinite(trainer, row, value)


def _any_process(trainer, flag: bool) -> bool:
    """True when `flag` holds on any process: every process must take the same decision, or they part."""
    acc = trainer.accelerator
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor(float(flag), device=acc.device), "sum").item())


def _where(trainer, row: dict) -> str:
    ids, index = getattr(trainer.train_loader.dataset, "ids", None), row["index"]
    rows = index.tolist() if index is not None else []
    names = [ids[i] for i in rows] if ids is not None else rows
    return f"step {row['step'] + 1}, epoch {row['epoch']}, batch {row['batch']} (ids {names})"


def _stop_nonfinite(trainer, row: dict | None, value: float) -> None:
    last, _ = newest_complete(checkpoint_root(trainer))
    kept = f"the last good checkpoint is {last.path}" if last else "no checkpoint was written yet"
    where = _where(trainer, row) if row else "a batch of another process"
    raise NonFiniteLoss(f"non-finite loss ({value}) at {where}; {kept}. Lower --lr, check those rows, "
                        f"or allow skipping with --skip_nonfinite=N")


def end_step(trainer, n: int, loss_sum: torch.Tensor, updated: bool = True) -> None:
    """After a gradient sync: a mid-epoch checkpoint every --ckpt_every applied updates."""
    if updated:
        fault_point("step", trainer.state.step)
    every, last = trainer.config.ckpt_every, n == len(trainer.train_loader)
    if updated and every and trainer.state.step % every == 0 and not last:
        save_run_checkpoint(trainer, (trainer.state.epoch, n), loss_sum)
    elif last:
        flush_step_log(trainer)  # checks the epoch's losses before validation and best weights use them


def end_epoch(trainer, improved: bool, stopped: bool) -> None:
    """After validation: an epoch-end checkpoint (the one kept as best when the score improved)."""
    save_run_checkpoint(trainer, (trainer.state.epoch + 1, 0), None, stopped=stopped, best=improved)


def save_run_checkpoint(trainer, pos: tuple[int, int], loss_sum, stopped: bool = False, best: bool = False) -> str:
    """Write one checkpoint of the whole run state at position `pos` = (epoch, batches done in it)."""
    acc, cfg, loop = trainer.accelerator, trainer.config, trainer.state
    name = f"e{pos[0]:04d}-b{pos[1]:06d}"
    if best:
        loop.best_ckpt = name
    flush_step_log(trainer)
    state = {
        "scheduler": scheduler_state(trainer.scheduler),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        **replace(loop, pos=pos, loss_sum=loss_sum, stopped=stopped).to_dict(), "config": cfg.to_dict(),
    }

    def write(folder: Path) -> None:
        acc.save_state(str(folder))
        if acc.is_main_process:
            torch.save(state, folder / STATE_FILE)

    meta = {"epoch": pos[0], "batches_done": pos[1], "step": loop.step, "num_processes": acc.num_processes,
            "config": cfg.to_dict()}
    root = checkpoint_root(trainer)
    write_checkpoint(root, name, write, meta, acc.is_main_process, acc.wait_for_everyone)
    if acc.is_main_process:
        prune_checkpoints(root, cfg.keep_ckpts, {loop.best_ckpt} if loop.best_ckpt else set())
    return name


def flush_step_log(trainer) -> None:
    """Move the recorded losses to the host (one sync), stop on a NaN/inf, append them to steps.jsonl."""
    rows, trainer.state.step_rows = trainer.state.step_rows, []
    if not rows:
        return
    values = torch.stack([r["loss"] for r in rows]).tolist()
    if not trainer.config.skip_nonfinite:  # (with a budget, each was checked as it came)
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if _any_process(trainer, bad is not None):
            _stop_nonfinite(trainer, rows[bad] if bad is not None else None, values[bad] if bad is not None else "nan")
    if trainer.accelerator.is_main_process:
        with open(trainer.fold_dir / STEP_LOG, "a") as f:
            f.write("".join(json.dumps({"epoch": r["epoch"], "batch": r["batch"], "step": r["step"], "loss": v}) + "\n"
                            for r, v in zip(rows, values)))


__all__ = ["CheckpointError", "LoopState", "NonFiniteLoss", "ResumeError", "begin_epoch", "check_loss", "end_epoch", "end_step",
           "find_resume", "restore_run", "save_run_checkpoint"]
