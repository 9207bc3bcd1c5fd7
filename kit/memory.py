"""Memory and speed: batch size that backs off on OOM, channels_last, torch.compile."""
from __future__ import annotations

import torch
from accelerate.utils.memory import clear_device_cache, should_reduce_batch_size


def set_channels_last(model: torch.nn.Module, on: bool) -> torch.nn.Module:
    """NHWC weights: convolutions run faster on tensor cores (inputs follow after the first conv)."""
    return model.to(memory_format=torch.channels_last) if on else model


def compile_in_place(model: torch.nn.Module, **options) -> torch.nn.Module:
    """torch.compile the module in place, so parameter names gain no `_orig_mod.` prefix."""
    model.compile(**options)
    return model


def fit_with_auto_batch(trainer, fold: int) -> dict:
    """`trainer.fit(fold)`; on out-of-memory halve batch_size and double grad_accum, then start the fold again.

    The effective batch (batch_size * grad_accum) stays the requested one, so the schedule and the
    results stay comparable. Like accelerate's find_executable_batch_size, every process must hit
    the OOM (same batch size and model on every GPU) for a multi-process run to back off together.
    """
    while True:
        try:
            return trainer.fit(fold)
        except Exception as e:  # noqa: BLE001 - only OOM is retried, everything else re-raised
            cfg = trainer.config
            if not should_reduce_batch_size(e) or cfg.batch_size < 2:
                raise
            trainer.release()
            clear_device_cache(garbage_collection=True)
            new = cfg.override(batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2)
            trainer.config = new
            trainer.accelerator.gradient_accumulation_steps = new.grad_accum
            trainer.accelerator.print(
                f"out of memory at batch_size={cfg.batch_size}: retrying fold {fold} with batch_size="
                f"{new.batch_size} x grad_accum={new.grad_accum} (effective {new.batch_size * new.grad_accum})")
