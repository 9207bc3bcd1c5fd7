"""EMA of the weights (timm's ModelEmaV3): updated per optimizer step, evaluated and kept as best."""
from __future__ import annotations

import torch
from timm.utils import ModelEmaV3


def create_ema(model: torch.nn.Module, decay: float, device=None) -> ModelEmaV3 | None:
    """An EMA copy of `model` on `device` (made before Accelerate wraps the model), or None when decay is 0."""
    if not decay:
        return None
    if not 0 < decay < 1:
        raise ValueError(f"--ema_decay={decay}: expected 0 (off) or a value in (0, 1), e.g. 0.999")
    # warmup: the effective decay grows with the step count, so short runs are not stuck near the init
    return ModelEmaV3(model, decay=decay, use_warmup=True, device=device)


def eval_module(model: torch.nn.Module, ema: ModelEmaV3 | None) -> torch.nn.Module:
    """The module to evaluate, predict with and keep as best: the EMA copy when there is one."""
    return ema.module if ema is not None else model
