"""Training losses by name: timm's where timm has one, short formulas where it has none.

Every loss takes (logits, target) with target either class indices (N,) or a probability
matrix (N, C) as MixUp/CutMix produce; `create_loss(..., soft_targets=True)` picks a loss that
accepts the latter. Class weights follow scikit-learn's "balanced" rule: n / (C * count).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import (AsymmetricLossMultiLabel, AsymmetricLossSingleLabel, BinaryCrossEntropy,
                       LabelSmoothingCrossEntropy, SoftTargetCrossEntropy)
from torch import nn

from .errors import KitError

LOSSES = ("ce", "weighted_ce", "smooth_ce", "focal", "asymmetric", "soft_f1", "bce")


class LossError(KitError, ValueError):
    """A loss name or combination that cannot work; the message says which field to change."""


def balanced_class_weights(counts) -> torch.Tensor:
    """Per-class weights n / (C * count): a rare class weighs as much in total as a common one."""
    counts = np.asarray(counts, dtype=np.float64)
    if (counts <= 0).any():
        raise LossError(f"weighted_ce: class counts {counts.tolist()} include an empty class")
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def as_probs(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices as one-hot rows; probability rows unchanged."""
    if target.ndim == 1:
        return F.one_hot(target.long(), num_classes).float()
    return target.float()


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with class weights, normalised by the summed weight of the targets (as torch does)."""

    def __init__(self, weight: torch.Tensor, smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weight", weight)
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 1:
            return F.cross_entropy(logits, target, weight=self.weight.to(logits.dtype), label_smoothing=self.smoothing)
        w = target.float() * self.weight  # soft targets: each class share carries its class weight
        return -(w * logits.float().log_softmax(-1)).sum() / w.sum()


class FocalLoss(nn.Module):
    """Softmax focal loss: -sum_c t_c (1 - p_c)^gamma log p_c; gamma=0 is cross-entropy."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = logits.float().log_softmax(-1)
        t = as_probs(target, logits.shape[-1])
        return -(t * (1 - logp.exp()).pow(self.gamma) * logp).sum(-1).mean()


class SoftF1Loss(nn.Module):
    """1 - macro-F1 computed on probabilities, so the metric itself is differentiable."""

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = logits.float().softmax(-1)
        t = as_probs(target, logits.shape[-1])
        tp, fp, fn = (p * t).sum(0), (p * (1 - t)).sum(0), ((1 - p) * t).sum(0)
        return 1 - (2 * tp / (2 * tp + fp + fn + self.eps)).mean()


class MultiHeadLoss(nn.Module):
    """One loss per head on its slice of the logits and its target column; the sum is trained."""

    def __init__(self, losses: dict, sizes: list[int]):
        super().__init__()
        self.losses, self.sizes = nn.ModuleDict(losses), sizes
        self.parts: dict = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        chunks = logits.split(self.sizes, dim=-1)
        self.parts = {name: fn(chunk, target[:, h]) for h, ((name, fn), chunk)
                      in enumerate(zip(self.losses.items(), chunks))}
        return sum(self.parts.values())


def create_loss(name: str, num_classes: int, class_counts=None, smoothing: float = 0.0, gamma: float = 2.0,
                soft_targets: bool = False, multilabel: bool = False) -> nn.Module:
    """A loss by name; `soft_targets` when MixUp/CutMix feed probability rows (smoothing is then in them)."""
    if name not in LOSSES:
        raise LossError(f"--loss={name!r} is not known; choose from {LOSSES}")
    if name == "ce":
        if multilabel:
            raise LossError("--loss=ce on a multilabel competition: use --loss=bce or --loss=asymmetric")
        return SoftTargetCrossEntropy() if soft_targets else nn.CrossEntropyLoss(label_smoothing=smoothing)
    if name == "smooth_ce":
        return SoftTargetCrossEntropy() if soft_targets else LabelSmoothingCrossEntropy(smoothing or 0.1)
    if name == "weighted_ce":
        if class_counts is None:
            raise LossError("--loss=weighted_ce needs the train class counts")
        return WeightedCrossEntropy(balanced_class_weights(class_counts), 0.0 if soft_targets else smoothing)
    if name == "focal":
        return FocalLoss(gamma)
    if name == "soft_f1":
        return SoftF1Loss()
    if name == "bce":
        return BinaryCrossEntropy(smoothing=0.0 if soft_targets else smoothing)
    if soft_targets:  # asymmetric: timm's single-label version indexes the target class
        raise LossError("--loss=asymmetric cannot take MixUp/CutMix targets; set --mixup=0 --cutmix=0 "
                        "or use ce, weighted_ce, focal, soft_f1 or bce")
    if multilabel:
        return AsymmetricLossMultiLabel(gamma_neg=4, gamma_pos=1, clip=0.05)
    return AsymmetricLossSingleLabel(gamma_pos=1, gamma_neg=4, eps=smoothing)
