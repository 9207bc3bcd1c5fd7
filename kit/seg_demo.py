"""The segmentation demo competition: synthetic shapes on noisy backgrounds, masks as Kaggle-style RLE.

64x64 images with a circle and/or a rectangle (each present in about 60% of images, sometimes
overlapping: the circle is drawn on top, so each mask is what is visible). Train masks are
column-major RLE columns of train.csv; the submission is one RLE column per class, scored by mean
dice per image and class on a hidden Public/Private split (kit.leaderboard).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

from .rle import rle_encode

SIZE = 64
CLASSES = ("circle", "rectangle")
N_TRAIN, N_TEST = 240, 160
PUBLIC_SHARE = 0.4


def draw_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image and its (H, W, 2) visible masks: circle, rectangle."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]  # a random linear gradient
    img = c0 + (c1 - c0) * (t - t.min()) / (np.ptp(t) + 1e-6)
    rect, circle = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    if rng.random() < 0.6:
        x0, y0 = rng.integers(2, SIZE - 24, 2)
        w, h = rng.integers(10, 30, 2)
        cv2.rectangle(rect, (int(x0), int(y0)), (int(min(x0 + w, SIZE - 1)), int(min(y0 + h, SIZE - 1))), 1, -1)
    if rng.random() < 0.6:
        r = int(rng.integers(6, 14))
        cx, cy = rng.integers(r, SIZE - r, 2)
        cv2.circle(circle, (int(cx), int(cy)), r, 1, -1)
    for mask in (rect, circle):  # circle last: on top
        colour = rng.uniform(0, 255, 3)
        img[mask == 1] = colour
    rect[circle == 1] = 0
    img += rng.normal(0, rng.uniform(4, 16), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), np.stack([circle, rect], axis=-1)


def random_ids(rng: np.random.Generator, n: int) -> list[str]:
    """`n` distinct 8-hex-digit image ids in random order, like a competition's hashed file names."""
    seen: set[str] = set()
    while len(seen) < n:
        seen.add(f"{rng.integers(0, 16**8):08x}")
    return list(rng.permutation(sorted(seen)))


def make_seg_demo(out: str | Path = "data/demo_seg", seed: int = 0) -> Path:
    """Write the shapes competition (images, RLE train.csv, sample submission, hidden solution, YAML)."""
    out, rng = Path(out), np.random.default_rng(seed)
    for sub in ("train", "test", "leaderboard"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ids = random_ids(rng, N_TRAIN + N_TEST)
    tables = {}
    for split, split_ids in (("train", ids[:N_TRAIN]), ("test", ids[N_TRAIN:])):
        rows = []
        for image_id in split_ids:
            img, masks = draw_sample(rng)
            cv2.imwrite(str(out / split / f"{image_id}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            rows.append({"id": image_id, **{c: rle_encode(masks[..., k], "F") for k, c in enumerate(CLASSES)}})
        tables[split] = pd.DataFrame(rows)
    tables["train"].to_csv(out / "train.csv", index=False)
    test = tables["test"].sort_values("id").reset_index(drop=True)
    pd.DataFrame({"id": test.id, **{c: "" for c in CLASSES}}).to_csv(out / "sample_submission.csv", index=False)
    test["Usage"] = np.where(rng.random(len(test)) < PUBLIC_SHARE, "Public", "Private")
    test.to_csv(out / "leaderboard" / "solution.csv", index=False)
    spec = {
        "name": "demo_seg", "task": "segmentation", "id_column": "id", "target_columns": list(CLASSES),
        "classes": list(CLASSES), "train_csv": "train.csv", "train_images": "train", "test_images": "test",
        "image_pattern": "{id}.png", "sample_submission": "sample_submission.csv", "metric": "dice",
        "image_size": [SIZE, SIZE], "masks": {"mode": "multilabel", "source": "rle", "order": "F"},
        "submission": {"kind": "rle", "columns": ["id", *CLASSES], "order": "F"},
        "kaggle": "", "daily_limit": 5, "leaderboard": "leaderboard/solution.csv",
    }
    (out / "competition.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out
