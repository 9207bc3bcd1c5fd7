"""The demo competition: scikit-learn's real handwritten digits, laid out like a Kaggle contest.

Train is clean, upright and imbalanced; the test set is about twice as large and shifted on
purpose (rotated, flipped, noisy, blurred, colour-shifted), as in the competitions in USERS.md.
The hidden solution (with its Public/Private split) is read only by kit.leaderboard.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from sklearn.datasets import load_digits

from .seg_demo import random_ids

# Per-class train counts: most classes alike, two rare ones (macro-F1 weighs them the same).
TRAIN_COUNTS = {0: 60, 1: 60, 2: 60, 3: 60, 4: 60, 5: 30, 6: 60, 7: 60, 8: 45, 9: 60}
SIZE = 32
PUBLIC_SHARE = 0.4
# The multihead demo: digit = 2 * pair + parity, a product of heads like mask x gender x age.
HEADS = {"digit_pair": lambda d: f"{d - d % 2}-{d - d % 2 + 1}", "parity": lambda d: ("even", "odd")[d % 2]}
HEAD_CLASSES = {"digit_pair": [f"{d}-{d + 1}" for d in range(0, 10, 2)], "parity": ["even", "odd"]}
# The multilabel demo: properties of the digit, any number per image (a 1 has none; a 6 is even, big and looped).
PROPERTIES = {"even": lambda d: d % 2 == 0, "big": lambda d: d >= 5, "prime": lambda d: d in (2, 3, 5, 7),
              "loop": lambda d: d in (0, 6, 8, 9)}


def _label(digit: str, task: str) -> str:
    """The label cell of a digit: the digit itself, or its space-separated properties (multilabel)."""
    if task != "multilabel":
        return digit
    return " ".join(name for name, has in PROPERTIES.items() if has(int(digit)))


def _render(digit: np.ndarray) -> np.ndarray:
    """An 8x8 digit (0..16) as a clean 32x32 RGB image: dark ink on white paper."""
    ink = cv2.resize(digit.astype(np.float32) / 16.0, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    gray = 255.0 * (1.0 - np.clip(ink, 0, 1))
    return np.repeat(gray[..., None], 3, axis=2).astype(np.uint8)


def _shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The test-time distribution shift: orientation, noise, blur and colour."""
    out = img.astype(np.float32)
    if rng.random() < 0.4:
        out = np.rot90(out, k=int(rng.integers(1, 4))).copy()
    if rng.random() < 0.25:
        out = out[:, ::-1].copy()
    angle = rng.uniform(-20, 20)
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, 1.0)
    out = cv2.warpAffine(out, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.5, 1.2))
    ink = 1.0 - out / 255.0  # 1 where the pen wrote
    paper, pen = rng.uniform(170, 255, 3), rng.uniform(0, 110, 3)
    out = paper * (1 - ink) + pen * ink
    out += rng.normal(0, rng.uniform(3, 25), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _write_png(path: Path, img: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def make_demo(out: str | Path = "data/demo", seed: int = 0, task: str = "multiclass") -> Path:
    """Write the demo competition (images, CSVs, competition.yaml, hidden solution) to `out`.

    task="multihead" labels the same images with two heads whose product is the digit:
    digit_pair (0-1, 2-3, ..., 8-9) x parity (even, odd); the submission is still the digit.
    """
    if task == "segmentation":  # a different data set: synthetic shapes with RLE masks
        from .seg_demo import make_seg_demo
        return make_seg_demo(out, seed)
    if task not in ("multiclass", "multihead", "multilabel"):
        raise ValueError(f"--task={task!r}: the demo is 'multiclass', 'multihead', 'multilabel' or 'segmentation'")
    out = Path(out)
    rng = np.random.default_rng(seed)
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    train_idx, test_idx, taken = [], [], {c: 0 for c in TRAIN_COUNTS}
    for i in order:
        c = int(digits.target[i])
        if taken[c] < TRAIN_COUNTS[c]:
            train_idx.append(i)
            taken[c] += 1
        else:
            test_idx.append(i)
    ids = random_ids(rng, len(digits.target))
    train_ids, test_ids = ids[: len(train_idx)], ids[len(train_idx):]
    for sub in ("train", "test", "leaderboard"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for i, image_id in zip(train_idx, train_ids):
        _write_png(out / "train" / f"{image_id}.png", _render(digits.images[i]))
    for i, image_id in zip(test_idx, test_ids):
        _write_png(out / "test" / f"{image_id}.png", _shift(_render(digits.images[i]), rng))
    labels = [str(int(digits.target[i])) for i in train_idx]
    heads = {h: [f(int(d)) for d in labels] for h, f in HEADS.items()} if task == "multihead" else {}
    cells = [_label(d, task) for d in labels]
    pd.DataFrame({"id": train_ids, "label": cells, **heads}).to_csv(out / "train.csv", index=False)
    test_order = sorted(test_ids)  # Kaggle's sample submissions are usually sorted by id
    pd.DataFrame({"id": test_order, "label": _label("0", task)}).to_csv(out / "sample_submission.csv", index=False)
    truth = dict(zip(test_ids, (_label(str(int(digits.target[i])), task) for i in test_idx)))
    usage = np.where(rng.random(len(test_order)) < PUBLIC_SHARE, "Public", "Private")
    pd.DataFrame({"id": test_order, "label": [truth[i] for i in test_order], "Usage": usage}).to_csv(
        out / "leaderboard" / "solution.csv", index=False)
    spec = {
        "name": "demo", "task": "multiclass", "id_column": "id", "target_columns": ["label"],
        "classes": [str(c) for c in range(10)], "train_csv": "train.csv", "train_images": "train",
        "test_images": "test", "image_pattern": "{id}.png", "sample_submission": "sample_submission.csv",
        "metric": "macro_f1", "submission": {"kind": "label", "columns": ["id", "label"]},
        "kaggle": "", "daily_limit": 5, "leaderboard": "leaderboard/solution.csv",
    }
    if task == "multihead":
        spec.update(task="multihead", target_columns=["label", *HEADS], heads=HEAD_CLASSES)
    if task == "multilabel":
        spec.update(name="demo_multilabel", task="multilabel", classes=list(PROPERTIES), metric="f1_micro")
    (out / "competition.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out
