"""Albumentations pipelines: train presets and the eval pipeline."""
from __future__ import annotations

import importlib
from pathlib import Path

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Norm  # noqa: F401  (re-exported)


def _finish(size: int, norm: Norm | None = None) -> list:
    norm = norm or Norm()
    return [A.Resize(size, size, interpolation=norm.cv2_interpolation), A.Normalize(norm.mean, norm.std), ToTensorV2()]


def _preset(name: str, size: int) -> list:
    if name == "none":
        return []
    if name == "light":
        return [A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.7)]
    if name == "medium":
        return _preset("light", size) + [
            A.RandomBrightnessContrast(0.2, 0.2, p=0.5),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
            A.CoarseDropout(num_holes_range=(1, 2), hole_height_range=(0.1, 0.25), hole_width_range=(0.1, 0.25), p=0.3),
        ]
    if name == "heavy":
        return _preset("medium", size) + [
            A.HorizontalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.HueSaturationValue(20, 30, 20, p=0.5),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
        ]
    if name == "testlike":  # mimics a rotated, flipped, noisy, colour-shifted test set
        return [
            A.RandomRotate90(p=0.5),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.3),
            A.Affine(rotate=(-20, 20), border_mode=cv2.BORDER_REPLICATE, p=0.9),  # no black corners
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.5, 1.2), p=0.3),
            A.ColorJitter(brightness=(0.9, 1.05), contrast=(0.35, 0.9), saturation=0, hue=0, p=0.9),  # contrast about the mean
            A.RGBShift(r_shift_limit=40, g_shift_limit=40, b_shift_limit=40, p=0.95),  # tints grey images too
            A.GaussNoise(std_range=(0.01, 0.1), p=0.9),
        ]
    raise KeyError(f"augmentation preset {name!r} is not known; choose from {PRESETS}, "
                   "or pass an albumentations .yaml/.json file or module:function")


PRESETS = ("none", "light", "medium", "heavy", "testlike")


def build_train_transforms(aug: str, size: int, norm: Norm | None = None) -> A.Compose:
    """A train pipeline from a preset name, an albumentations file or `module:function`, then resize/normalise/tensor.

    A file (`A.save(pipeline, "augs.yaml", data_format="yaml")`, or .json) or a function `f(size)`
    returning a list of transforms or a Compose gives the augmentations; a pipeline that already
    ends in ToTensorV2 is used as it is. `norm`: the model's mean/std/interpolation (ImageNet's when None).
    """
    if aug.endswith((".yaml", ".yml", ".json")):
        if not Path(aug).exists():
            raise FileNotFoundError(f"--aug={aug}: albumentations pipeline file not found")
        augs = A.load(aug, data_format="json" if aug.endswith(".json") else "yaml")
    elif ":" in aug:
        module, _, name = aug.partition(":")
        try:
            augs = getattr(importlib.import_module(module), name)(size)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--aug={aug}: cannot call {name} from module {module} ({e})") from e
    else:
        return A.Compose(_preset(aug, size) + _finish(size, norm))
    steps = list(augs.transforms) if isinstance(augs, A.BaseCompose) else list(augs)
    return A.Compose(steps if steps and isinstance(steps[-1], ToTensorV2) else steps + _finish(size, norm))


def build_augment(aug: str, size: int) -> A.Compose:
    """The preset's augmentations alone, on uint8 images (no resize, normalisation or tensor)."""
    return A.Compose(_preset(aug, size))


def build_eval_transforms(size: int, norm: Norm | None = None) -> A.Compose:
    """The deterministic eval/test pipeline: resize, normalise, to tensor (`norm`: the model's; ImageNet's when None)."""
    return A.Compose(_finish(size, norm))
