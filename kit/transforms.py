"""Albumentations pipelines: train presets and the eval pipeline."""
from __future__ import annotations

import importlib
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, Norm  # noqa: F401  (re-exported)


def _finish(size: int, norm: Norm | None = None, normalize: bool = True) -> list:
    # normalize=False: uint8 tensors, a quarter of the bytes to move; normalize_images finishes them on the device
    norm = norm or Norm()
    steps = [A.Normalize(norm.mean, norm.std)] if normalize else []
    return [A.Resize(size, size, interpolation=norm.cv2_interpolation), *steps, ToTensorV2()]


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


def build_train_transforms(aug: str, size: int, norm: Norm | None = None, normalize: bool = True) -> A.Compose:
    """A train pipeline from a preset name, an albumentations file or `module:function`, then resize/normalise/tensor.

    normalize=False ends in uint8 tensors, for `normalize_images` on the device.

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
        return A.Compose(_preset(aug, size) + _finish(size, norm, normalize))
    steps = list(augs.transforms) if isinstance(augs, A.BaseCompose) else list(augs)
    return A.Compose(steps if steps and isinstance(steps[-1], ToTensorV2) else steps + _finish(size, norm, normalize))


def build_augment(aug: str, size: int) -> A.Compose:
    """The preset's augmentations alone, on uint8 images (no resize, normalisation or tensor)."""
    return A.Compose(_preset(aug, size))


def build_eval_transforms(size: int, norm: Norm | None = None, normalize: bool = True) -> A.Compose:
    """The deterministic eval/test pipeline: resize, normalise (unless normalize=False: uint8), to tensor.

    `norm`: the model's mean/std/interpolation (ImageNet's when None).
    """
    return A.Compose(_finish(size, norm, normalize))


def normalize_images(images: torch.Tensor, norm: Norm | None = None, channels_last: bool = False) -> torch.Tensor:
    """A uint8 (N, C, H, W) batch -> float32 normalised with `norm` on its own device, bitwise what A.Normalize
    gives on the CPU; a batch that is not uint8 (a pipeline that normalised already) is returned as it is."""
    if images.dtype != torch.uint8:
        return images
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)  # 1 byte a value to reorder, not 4
    mean, scale, lut = _norm_constants(images.device, images.shape[1], norm or Norm())
    if lut is None:
        return images.float().sub_(mean).mul_(scale)
    return torch.stack([lut[c][images[:, c].long()] for c in range(images.shape[1])], 1)


def normalize_batch(batch, norm: Norm | None = None, channels_last: bool = False):
    """A loader batch whose uint8 `image` came to the device, normalised there; any other batch as it is."""
    image = batch.get("image") if isinstance(batch, dict) else None
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
        return batch  # a dataset of its own (no image, or normalised already)
    return {**batch, "image": normalize_images(image, norm, channels_last)}


_NORM: dict = {}


def _norm_constants(device: torch.device, channels: int, norm: Norm) -> tuple:
    """(mean, scale, None) when float32 (x - mean) * scale reproduces A.Normalize's table on this device, else
    (.., .., table): checked once per device and normalisation on all 256 values of every channel."""
    key = (str(device), channels, norm.mean, norm.std)
    if key not in _NORM:
        if channels != len(norm.mean):
            raise ValueError(f"uint8 batch with {channels} channels: the normalisation has {len(norm.mean)} "
                             "(mean/std per channel); normalise in the albumentations pipeline instead")
        ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], channels, axis=2)  # (256, 1, C)
        table = torch.from_numpy(A.Normalize(norm.mean, norm.std)(image=ramp)["image"][:, 0].T.copy())
        table = table.to(device)  # (C, 256)
        # albumentations' own float32 constants: mean * 255 and 1 / (std * 255)
        mean = torch.from_numpy(np.array(norm.mean, np.float32) * 255).to(device).view(1, -1, 1, 1)
        scale = torch.from_numpy(np.reciprocal(np.array(norm.std, np.float32) * 255)).to(device).view(1, -1, 1, 1)
        x = torch.arange(256, device=device, dtype=torch.uint8).view(1, 1, 256, 1).expand(1, channels, 256, 1)
        same = torch.equal((x.float() - mean) * scale, table.view(1, channels, 256, 1))
        _NORM[key] = (mean, scale, None if same else table)
    return _NORM[key]
