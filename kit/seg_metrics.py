"""Mask metrics (dice, IoU) through smp.metrics, probability -> mask, and OOF threshold tuning.

Scores are Kaggle's: computed per image and class, 1 when prediction and truth are both empty,
then averaged over every (image, class) pair.
"""
from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch

SEG_METRICS = ("dice", "iou")
GRID = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())


def pair_scores(pred: np.ndarray, true: np.ndarray, metric: str = "dice", chunk: int = 256) -> np.ndarray:
    """(N, C) score of each image and class for 0/1 masks of shape (N, C, H, W)."""
    if metric not in SEG_METRICS:
        raise KeyError(f"segmentation metric {metric!r} is not known; choose from {SEG_METRICS}")
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {true.shape}")
    score_fn = smp.metrics.f1_score if metric == "dice" else smp.metrics.iou_score  # dice is F1 on pixels
    out = []
    for s in range(0, len(pred), chunk):  # bounded memory on large OOF sets
        p = torch.as_tensor(np.ascontiguousarray(pred[s:s + chunk]), dtype=torch.long)
        t = torch.as_tensor(np.ascontiguousarray(true[s:s + chunk]), dtype=torch.long)
        tp, fp, fn, tn = smp.metrics.get_stats(p, t, mode="multilabel")
        out.append(score_fn(tp, fp, fn, tn, reduction="none", zero_division=1.0).numpy())
    return np.concatenate(out) if out else np.zeros((0, pred.shape[1]))


def mask_score(pred: np.ndarray, true: np.ndarray, metric: str = "dice") -> float:
    """Mean score over every (image, class) pair."""
    return float(pair_scores(pred, true, metric).mean())


def binarize(probs: np.ndarray, mode: str, threshold=0.5) -> np.ndarray:
    """Probabilities (N, outputs, H, W) -> 0/1 masks (N, classes, H, W); multiclass drops the background."""
    if mode == "multiclass":
        index = probs.argmax(1)
        return np.stack([index == k for k in range(1, probs.shape[1])], axis=1).astype(np.uint8)
    thr = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (probs.shape[1],)).reshape(1, -1, 1, 1)
    return (probs > thr).astype(np.uint8)


def tune_thresholds(probs: np.ndarray, true: np.ndarray, metric: str = "dice", grid=GRID) -> tuple[list, float]:
    """Per-class threshold maximising the OOF score (sigmoid outputs); returns (thresholds, tuned score)."""
    best = []
    for c in range(probs.shape[1]):
        scores = [pair_scores((probs[:, c:c + 1] > t).astype(np.uint8), true[:, c:c + 1], metric).mean()
                  for t in grid]
        best.append(float(grid[int(np.argmax(scores))]))  # the first of equal scores: the lowest threshold
    return best, mask_score(binarize(probs, "multilabel", best), true, metric)
