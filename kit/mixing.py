"""MixUp / CutMix through timm's `Mixup`: images blended in pairs, targets become probability rows."""
from __future__ import annotations

from timm.data import Mixup

from .errors import KitError


class MixingError(KitError, ValueError):
    """A MixUp/CutMix setting that cannot work; the message names the field."""


def create_mixer(mixup: float, cutmix: float, prob: float, smoothing: float, num_classes: int,
                 batch_size: int) -> Mixup | None:
    """timm's Mixup when --mixup or --cutmix is on, else None; checked before any training starts."""
    if mixup <= 0 and cutmix <= 0:
        return None
    if batch_size % 2:  # Mixup pairs each row with its mirror; the train loader drops a short last batch
        raise MixingError(f"--batch_size={batch_size} must be even with --mixup/--cutmix")
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=smoothing,
                 num_classes=num_classes)


def mix_batch(mixer: Mixup, batch: dict) -> dict:
    """The batch with mixed images and soft targets (each row sums to 1)."""
    image, target = mixer(batch["image"], batch["target"])
    return {**batch, "image": image, "target": target}
