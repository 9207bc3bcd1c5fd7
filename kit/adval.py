"""Adversarial validation: how far test is from train, and a validation view that closes the gap.

A gradient-boosted classifier on fast image features (per-image statistics + a tiny grayscale
thumbnail) tells train images from test images with cross-validation; its AUC measures the shift.
The same classifier then scores train images pushed through each augmentation preset: the preset
that brings the AUC closest to 0.5 is the "test-like" view used to validate.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy.stats import ks_2samp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from .competition import Competition
from .data import read_image, seed_pipeline
from .transforms import PRESETS, build_augment
from .workdir import work_dir

STATS = ("brightness", "contrast", "noise", "saturation", "colour_cast", "ink_row", "ink_col",
         "ink_angle", "top_bottom", "left_right")
THUMB = 8
NO_SHIFT_AUC = 0.6  # below this the shift is too weak to build test-like folds on


def image_stats(img: np.ndarray) -> dict:
    """Simple statistics that differ when test is shifted: light, contrast, noise, colour, orientation."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    rgb = img.reshape(-1, 3).astype(np.float32)
    ink = np.clip(np.median(gray) - gray, 0, None)  # what stands out darker than the background
    mass = ink.sum() + 1e-6
    rows, cols = np.mgrid[: gray.shape[0], : gray.shape[1]] / np.array(gray.shape[:2]).reshape(2, 1, 1)
    r0, c0 = (ink * rows).sum() / mass, (ink * cols).sum() / mass
    mu20 = (ink * (cols - c0) ** 2).sum() / mass
    mu02 = (ink * (rows - r0) ** 2).sum() / mass
    mu11 = (ink * (rows - r0) * (cols - c0)).sum() / mass
    half_r, half_c = gray.shape[0] // 2, gray.shape[1] // 2
    return {
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
        "noise": float(np.abs(gray - cv2.medianBlur(gray.astype(np.uint8), 3)).mean()),
        "saturation": float(hsv[..., 1].mean()),
        "colour_cast": float(np.abs(rgb.mean(0) - rgb.mean()).sum()),
        "ink_row": float(r0),
        "ink_col": float(c0),
        "ink_angle": float(0.5 * np.arctan2(2 * mu11, mu20 - mu02)),
        "top_bottom": float((ink[:half_r].sum() - ink[-half_r:].sum()) / mass),
        "left_right": float((ink[:, :half_c].sum() - ink[:, -half_c:].sum()) / mass),
    }


def image_features(img: np.ndarray) -> np.ndarray:
    """Statistics plus a contrast-normalised grayscale thumbnail (the shape of the content)."""
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    thumb = cv2.resize(gray, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
    thumb = (thumb - thumb.mean()) / (thumb.std() + 1e-6)
    return np.concatenate([np.array(list(image_stats(img).values()), np.float32), thumb])


def shift_auc(train_x: np.ndarray, test_x: np.ndarray, seed: int = 0, n_splits: int = 5):
    """Cross-validated AUC of a train-vs-test classifier, and each row's out-of-fold p(test)."""
    x = np.vstack([train_x, test_x])
    y = np.r_[np.zeros(len(train_x)), np.ones(len(test_x))]
    p = np.zeros(len(y))
    # One OpenMP thread: a few dozen features per image fit quickly on one, while OpenMP threads that spin-wait
    # for cores a training run holds made them 4x slower (a test on 2 cores beside two 2-thread jobs: 132 s -> 29 s).
    with threadpool_limits(limits=1, user_api="openmp"):
        for tr, va in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(x, y):
            clf = HistGradientBoostingClassifier(max_iter=150, learning_rate=0.1, random_state=seed)
            p[va] = clf.fit(x[tr], y[tr]).predict_proba(x[va])[:, 1]
    return float(roc_auc_score(y, p)), p[: len(train_x)], p[len(train_x):]


def augment_seeded(images: list, aug: str, size: int, seed: int) -> list:
    """Each image through the preset with a seed of its own (same result on every call)."""
    if aug == "none":
        return images
    pipeline = build_augment(aug, size)
    out = []
    for i, img in enumerate(images):
        seed_pipeline(pipeline, seed + i)
        out.append(pipeline(image=img)["image"])
    return out


def _grid(images: list, titles: list, path: Path, cols: int = 8) -> None:
    from .figures import image_grid_figure, save_figure
    save_figure(image_grid_figure(images, titles, cols), path, dpi=90)


def stat_differences(train_imgs: list, test_imgs: list) -> pd.DataFrame:
    """Each statistic's train and test means and the KS distance between them, largest first."""
    a = pd.DataFrame([image_stats(i) for i in train_imgs])
    b = pd.DataFrame([image_stats(i) for i in test_imgs])
    rows = [{"stat": s, "train_mean": a[s].mean(), "test_mean": b[s].mean(),
             "ks": ks_2samp(a[s], b[s]).statistic} for s in STATS]
    return pd.DataFrame(rows).sort_values("ks", ascending=False).reset_index(drop=True)


def run_adval(comp: Competition, size: int = 0, seed: int = 0, augs=PRESETS, top: int = 16) -> dict:
    """Measure the shift, pick the most test-like augmentation, write report, grids and p(test) to <comp>/adval/."""
    out = work_dir(comp) / "adval"
    out.mkdir(exist_ok=True)
    train = comp.read_train()
    test = comp.read_test()
    train_imgs = [read_image(comp.image_path(i, "train")) for i in train[comp.id_column]]
    test_imgs = [read_image(comp.image_path(i, "test")) for i in test[comp.id_column]]
    size = size or int(np.median([im.shape[0] for im in train_imgs]))
    test_x = np.stack([image_features(i) for i in test_imgs])
    by_aug, p_train = {}, None
    for aug in augs:
        shifted = augment_seeded(train_imgs, aug, size, seed)
        auc, p_tr, p_te = shift_auc(np.stack([image_features(i) for i in shifted]), test_x, seed)
        by_aug[aug] = auc
        if aug == "none":
            p_train, p_test = p_tr, p_te
    chosen = min(by_aug, key=lambda a: abs(by_aug[a] - 0.5))
    stats = stat_differences(train_imgs, test_imgs)
    stats.to_csv(out / "stats.csv", index=False)
    likeness = pd.DataFrame({comp.id_column: train[comp.id_column], "p_test": p_train})
    likeness.to_csv(out / "train_p_test.csv", index=False)
    most = np.argsort(-p_train)[:top]
    _grid([train_imgs[i] for i in most], [f"p={p_train[i]:.2f}" for i in most], out / "train_most_testlike.png")
    least = np.argsort(p_test)[:top]
    _grid([test_imgs[i] for i in least], [f"p={p_test[i]:.2f}" for i in least], out / "test_least_trainlike.png")
    report = {"auc": by_aug["none"], "auc_by_aug": by_aug, "chosen_aug": chosen,
              "auc_after": by_aug[chosen], "auc_drop": by_aug["none"] - by_aug[chosen], "size": size,
              "top_stats": stats.head(5).to_dict("records"), "n_train": len(train), "n_test": len(test)}
    (out / "adval.json").write_text(json.dumps(report, indent=1))
    return report


def format_report(report: dict, out: Path) -> str:
    """The adversarial-validation report as text."""
    lines = [f"adversarial AUC train vs test: {report['auc']:.3f}  (0.5 = no shift)"]
    for aug, auc in report["auc_by_aug"].items():
        mark = "  <- chosen test-like validation view" if aug == report["chosen_aug"] else ""
        lines.append(f"  train + {aug:<9} vs test: AUC {auc:.3f}{mark}")
    lines.append(f"AUC fell by {report['auc_drop']:.3f} with --valid_aug={report['chosen_aug']}")
    lines.append("statistics that differ most (KS distance; train mean -> test mean):")
    for r in report["top_stats"]:
        lines.append(f"  {r['stat']:<12} KS {r['ks']:.2f}  {r['train_mean']:.3f} -> {r['test_mean']:.3f}")
    lines.append(f"grids: {out / 'train_most_testlike.png'}, {out / 'test_least_trainlike.png'}")
    return "\n".join(lines)


def load_report(comp: Competition) -> dict | None:
    """The last `kit adval` report of this competition, if any."""
    path = work_dir(comp) / "adval" / "adval.json"
    return json.loads(path.read_text()) if path.exists() else None
