"""Class-balanced (over)sampling that stays correct under DDP.

The sampler draws the same index sequence on every process (seed + epoch), and Accelerate's
`prepare` deals its batches out to the processes in turn, so each rank draws its own, disjoint
share of one balanced stream; no rank needs to know the others.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

SAMPLERS = ("shuffle", "balanced", "sqrt")


def class_weights_for(labels, power: float = 1.0) -> torch.Tensor:
    """Per-row draw weights count(class)^-power: 1 draws every class equally, 0.5 softens it."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return torch.tensor(counts[inverse].astype(np.float64) ** -power)


class ClassBalancedSampler(Sampler):
    """Draw `num_samples` indices with replacement, each class with equal chance (power=1)."""

    def __init__(self, labels, num_samples: int | None = None, power: float = 1.0, seed: int = 0):
        self.weights = class_weights_for(labels, power)
        self.num_samples = num_samples or len(self.weights)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Accelerate's loader each epoch: a new draw per epoch, the same on every rank."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()


def create_sampler(name: str, dataset, comp=None, seed: int = 0) -> Sampler | None:
    """The train sampler named by `--sampler` over `dataset.targets`; None means plain shuffling."""
    if name not in SAMPLERS:
        raise ValueError(f"--sampler={name!r} is not known; choose from {SAMPLERS}")
    if name == "shuffle":
        return None
    if getattr(dataset, "targets", None) is None:
        raise ValueError(f"--sampler={name} needs the train dataset's class indices as `dataset.targets`")
    labels = np.asarray(dataset.targets)
    if comp is not None:
        from .tasks import task_of
        labels = task_of(comp).sampler_labels(labels)  # multihead: balance the composite classes
    return ClassBalancedSampler(labels, power=1.0 if name == "balanced" else 0.5, seed=seed)
