"""Model-aware input preprocessing: mean, std and interpolation from timm's data config of the model.

Fine-tuning a pretrained model with another model's normalisation silently costs accuracy: CLIP
models expect (0.481, 0.458, 0.408), many others 0.5/0.5, and interpolation differs too. The values
come from timm's pretrained config of the model (pretrained or not), each overridable by a config
field, and the resolved ones are written into the run's config.yaml.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# timm's interpolation names -> OpenCV's (albumentations resizes with OpenCV); "random" is a train-time timm
# option, resolved to bilinear for a deterministic pipeline
CV2_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "linear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                     "nearest": cv2.INTER_NEAREST, "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4,
                     "random": cv2.INTER_LINEAR}


@dataclass(frozen=True)
class Norm:
    """What every pipeline of a run feeds its model: per-channel mean and std (0-1 scale) and the resize method."""

    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"

    @property
    def cv2_interpolation(self) -> int:
        """The OpenCV flag albumentations resizes with."""
        return CV2_INTERPOLATION[self.interpolation]

    def as_fields(self) -> dict:
        """The config fields that record this normalisation (mean, std, interpolation as text)."""
        return {"mean": format_floats(self.mean), "std": format_floats(self.std), "interpolation": self.interpolation}


def format_floats(values) -> str:
    """(0.5, 0.5, 0.5) -> '0.5,0.5,0.5' (round-trips through parse_floats exactly)."""
    return ",".join(repr(float(v)) for v in values)


def parse_floats(text: str, key: str) -> tuple:
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5); raise naming the config key on anything else."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--{key}={text!r}: expected three comma-separated numbers, e.g. 0.5,0.5,0.5") from None
    if len(values) != 3:
        raise ValueError(f"--{key}={text!r}: expected three comma-separated numbers (one per RGB channel)")
    return values


def timm_norm(model_name: str) -> Norm:
    """mean/std/interpolation of a timm model's default pretrained config; ImageNet's when timm has none."""
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg
    name = model_name.split(".")[0] if model_name else ""
    try:
        cfg = get_pretrained_cfg(model_name) or (get_pretrained_cfg(name) if name else None)
    except (RuntimeError, ValueError):
        cfg = None
    if cfg is None:
        return Norm()
    data = resolve_data_config({}, pretrained_cfg=cfg.to_dict())
    return Norm(tuple(data["mean"]), tuple(data["std"]), str(data["interpolation"]))


def resolve_norm(model_name: str, mean: str = "", std: str = "", interpolation: str = "") -> Norm:
    """The model's own preprocessing, each field replaced where the config sets it."""
    base = timm_norm(model_name)
    if interpolation and interpolation not in CV2_INTERPOLATION:
        raise ValueError(f"--interpolation={interpolation!r}: choose one of {sorted(CV2_INTERPOLATION)}")
    return Norm(parse_floats(mean, "mean") if mean else base.mean, parse_floats(std, "std") if std else base.std,
                interpolation or base.interpolation)
