"""Segmentation data: the `masks:` section of competition.yaml, mask loading (PNG or RLE), the dataset.

```yaml
task: segmentation
classes: [circle, rectangle]   # the foreground classes, in submission order (binary: one class)
image_size: [64, 64]           # height, width of the original images (RLE pixel numbering)
masks:
  mode: multilabel             # binary | multiclass (one class per pixel) | multilabel (classes may overlap)
  source: rle                  # rle: target_columns hold one RLE column per class | png: mask files
  order: F                     # RLE pixel order: F column-major (Kaggle's usual) | C row-major
  folder: train_masks          # png: mask folder; binary: non-zero is on, multiclass: pixel value k = class k
  pattern: "{id}.png"          # png file name; multilabel: one file per class, e.g. "{id}_{class}.png"
```
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from .competition import Competition, CompetitionError
from .data import ImageDataset
from .preflight import check_image
from .rle import ORDERS, rle_decode
from .validate import rle_problem

MODES = ("binary", "multiclass", "multilabel")
SOURCES = ("rle", "png")


@dataclass(frozen=True)
class MaskSpec:
    mode: str  # binary | multiclass | multilabel
    source: str  # rle | png
    classes: tuple  # foreground classes, in submission order
    image_size: tuple  # (height, width) of the original images
    order: str = "F"
    columns: tuple = ()  # rle: one train column per class
    folder: str = "train_masks"
    pattern: str = "{id}.png"

    @property
    def num_outputs(self) -> int:
        """Model output channels: one per class, plus background for multiclass (softmax)."""
        return len(self.classes) + (self.mode == "multiclass")


def mask_spec(comp: Competition) -> MaskSpec:
    """The competition's mask description, checked; errors name the competition.yaml key."""
    where = comp.root / "competition.yaml"
    raw = dict(comp.extra.get("masks") or {})
    if comp.task != "segmentation":
        raise CompetitionError(f"{where}: task: {comp.task!r}, a mask spec needs task: segmentation")
    mode, source = raw.get("mode", "binary"), raw.get("source", "rle")
    if mode not in MODES:
        raise CompetitionError(f"{where}: masks.mode: {mode!r} is not one of {MODES}")
    if source not in SOURCES:
        raise CompetitionError(f"{where}: masks.source: {source!r} is not one of {SOURCES}")
    order = str(raw.get("order", "F"))
    if order not in ORDERS:
        raise CompetitionError(f"{where}: masks.order: {order!r}: use F (column-major) or C (row-major)")
    classes = tuple(comp.classes)
    if not classes or (mode == "binary" and len(classes) != 1):
        raise CompetitionError(f"{where}: classes: a {mode} segmentation needs "
                               f"{'exactly one class' if mode == 'binary' else 'at least one class'}")
    size = comp.extra.get("image_size") or comp.submission.get("image_size")
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(int(s) > 0 for s in size)):
        raise CompetitionError(f"{where}: image_size: give [height, width] of the images, got {size!r}")
    columns = tuple(comp.target_columns) if source == "rle" else ()
    if source == "rle" and len(columns) != len(classes):
        raise CompetitionError(f"{where}: target_columns: masks.source rle needs one RLE column per class "
                               f"({len(classes)}), got {list(columns)}")
    pattern = str(raw.get("pattern", "{id}_{class}.png" if mode == "multilabel" else "{id}.png"))
    if source == "png" and mode == "multilabel" and "{class}" not in pattern:
        raise CompetitionError(f"{where}: masks.pattern: multilabel PNG masks need one file per class ({{class}})")
    return MaskSpec(mode, source, classes, (int(size[0]), int(size[1])), order, columns,
                    str(raw.get("folder", "train_masks")), pattern)


def mask_path(comp: Competition, spec: MaskSpec, image_id: str, cls: str = "") -> Path:
    """The PNG mask file of an image (of one class for multilabel)."""
    return comp.root / spec.folder / spec.pattern.format(id=image_id, **{"class": cls})


def load_mask(comp: Competition, spec: MaskSpec, row: pd.Series, line: int | None = None) -> np.ndarray:
    """One image's mask as (H, W, classes) uint8 0/1, from its RLE cells or PNG file(s)."""
    image_id = row[comp.id_column]
    if spec.source == "rle":
        csv = comp.path(comp.train_csv)
        planes = [rle_decode(row[col], spec.image_size, spec.order,
                             where=f"{csv}:{line if line is not None else '?'} column {col!r} (id {image_id!r})")
                  for col in spec.columns]
        return np.stack(planes, axis=-1)
    if spec.mode == "multilabel":
        planes = [_read_png(mask_path(comp, spec, image_id, c)) > 0 for c in spec.classes]
        return np.stack(planes, axis=-1).astype(np.uint8)
    values = _read_png(mask_path(comp, spec, image_id))
    if spec.mode == "binary":
        return (values > 0).astype(np.uint8)[..., None]
    return np.stack([values == k for k in range(1, len(spec.classes) + 1)], axis=-1).astype(np.uint8)


def _read_png(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise OSError(f"{path}: cannot read or decode mask")
    return m


def check_masks(comp: Competition, spec: MaskSpec, df: pd.DataFrame) -> list[str]:
    """Every malformed RLE cell or missing/corrupt mask file, named by CSV line and column."""
    csv, problems = comp.path(comp.train_csv), []
    h, w = spec.image_size
    for i, row in enumerate(df.itertuples(index=False)):
        values = dict(zip(df.columns, row))
        where = f"{csv}:{i + 2}"
        if spec.source == "rle":
            for col in spec.columns:
                p = rle_problem(values[col], h * w)
                if p:
                    problems.append(f"{where} column {col!r} (id {values[comp.id_column]!r}): {p}")
            continue
        classes = spec.classes if spec.mode == "multilabel" else ("",)
        for c in classes:
            path = mask_path(comp, spec, values[comp.id_column], c)
            verdict = check_image(path)
            if verdict:
                problems.append(f"{where} column {comp.id_column!r} = {values[comp.id_column]!r}: {path}: {verdict}")
    return problems


def mask_target(mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(H, W, C) 0/1 -> the loss's target: (C, H, W) float, or (H, W) class index for multiclass."""
    mask = mask.permute(2, 0, 1)
    if mode != "multiclass":
        return mask.float()
    index = torch.arange(1, mask.shape[0] + 1, dtype=torch.long).view(-1, 1, 1)
    return (mask.long() * index).amax(0)  # 0 is background


class SegDataset(ImageDataset):
    """Rows of (image path, mask) -> dict(image, mask, index); albumentations moves image and mask together.

    Augmentation is seeded per row as for images (ImageDataset): (seed, epoch, row) in training, so a resumed
    run draws exactly the augmentations of an uninterrupted one.
    """

    def __init__(self, comp: Competition, spec: MaskSpec, rows: pd.DataFrame | None, paths: list, transform,
                 lines: list | None = None, view_seed: int | None = None):
        super().__init__(paths, None, transform, view_seed)
        self.comp, self.spec, self.rows = comp, spec, rows
        self.lines = lines  # CSV line of each row, for error messages
        self.targets = None if rows is None else MaskTargets(self)

    def __getitem__(self, i: int) -> dict:
        image = self.read(i)
        item = {"index": i}
        self.seed_transform(i)
        if self.rows is None:
            item["image"] = self.transform(image=image)["image"]
            return item
        mask = load_mask(self.comp, self.spec, self.rows.iloc[i], self.lines[i] if self.lines else None)
        if mask.shape[:2] != image.shape[:2]:
            raise ValueError(f"{self.paths[i]}: image is {image.shape[:2]} but its mask is {mask.shape[:2]}")
        out = self.transform(image=image, mask=mask)
        item["image"] = out["image"]
        item["mask"] = mask_target(torch.as_tensor(np.asarray(out["mask"])), self.spec.mode)
        return item


class MaskTargets:
    """A dataset's masks as one array on demand (`.numpy()`): (N, C, H, W) 0/1 per foreground class."""

    def __init__(self, ds: SegDataset):
        self.ds = ds

    def numpy(self) -> np.ndarray:
        """Every mask at model resolution, as 0/1 planes per foreground class."""
        masks = [self.ds[i]["mask"] for i in range(len(self.ds))]
        return np.stack([one_hot_masks(m, self.ds.spec) for m in masks]) if masks else np.zeros((0,))


def one_hot_masks(target: torch.Tensor, spec: MaskSpec) -> np.ndarray:
    """A loss target back to (C, H, W) uint8 planes of the foreground classes."""
    if spec.mode == "multiclass":
        return np.stack([(target == k).numpy() for k in range(1, len(spec.classes) + 1)]).astype(np.uint8)
    return target.numpy().astype(np.uint8)


def write_masks(path: Path, ids: list, probs: np.ndarray) -> None:
    """Save ids and probability masks (float16) to .npz, atomically."""
    tmp = Path(path).with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.asarray([str(i) for i in ids]), probs=probs.astype(np.float16))
    os.replace(tmp, path)


def read_masks(path: Path) -> tuple[list, np.ndarray]:
    """ids and float32 probability masks written by write_masks."""
    with np.load(path) as z:
        return z["ids"].tolist(), z["probs"].astype(np.float32)
