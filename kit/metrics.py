"""Competition metrics on class probabilities, by name (scikit-learn does the arithmetic)."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def macro_f1(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Macro-averaged F1 of the arg-max class: every class weighs the same."""
    labels = np.arange(probs.shape[1])
    return float(skm.f1_score(y_true, probs.argmax(1), average="macro", labels=labels, zero_division=0))


def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Share of rows whose arg-max class is right."""
    return float(skm.accuracy_score(y_true, probs.argmax(1)))


def log_loss(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Multiclass cross-entropy of the probabilities (lower is better)."""
    return float(skm.log_loss(y_true, probs, labels=np.arange(probs.shape[1])))


def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: binary on the positive column, else one-vs-rest macro."""
    if probs.shape[1] == 2:
        return float(skm.roc_auc_score(y_true, probs[:, 1]))
    return float(skm.roc_auc_score(y_true, probs, multi_class="ovr", labels=np.arange(probs.shape[1])))


def f1_micro(y_true: np.ndarray, probs: np.ndarray, threshold=0.5) -> float:
    """Multilabel micro-F1: every (row, class) decision counts once; 0/1 truth, a class is on at `threshold`."""
    return float(skm.f1_score(y_true, probs >= threshold, average="micro", zero_division=0))


def f1_macro(y_true: np.ndarray, probs: np.ndarray, threshold=0.5) -> float:
    """Multilabel macro-F1: the mean of the per-class F1 at `threshold`."""
    return float(skm.f1_score(y_true, probs >= threshold, average="macro", zero_division=0))


def mean_average_precision(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Multilabel mAP: average precision of each class's ranking, averaged over classes (no threshold)."""
    return float(skm.average_precision_score(y_true, probs, average="macro"))


METRICS = {"macro_f1": macro_f1, "accuracy": accuracy, "log_loss": log_loss, "roc_auc": roc_auc,
           "f1_micro": f1_micro, "f1_macro": f1_macro, "map": mean_average_precision}
LOWER_IS_BETTER = {"log_loss"}


def get_metric(name: str):
    """Look up a metric function by its competition.yaml name."""
    if name not in METRICS:
        raise KeyError(f"metric {name!r} is not known; choose from {sorted(METRICS)}")
    return METRICS[name]


def is_better(name: str, new: float, best: float | None) -> bool:
    """Whether `new` beats `best` for this metric's direction."""
    if best is None:
        return True
    return new < best if name in LOWER_IS_BETTER else new > best


def per_class_f1(y_true: np.ndarray, probs: np.ndarray) -> list[float]:
    """F1 of each class, in class order."""
    labels = np.arange(probs.shape[1])
    return skm.f1_score(y_true, probs.argmax(1), average=None, labels=labels, zero_division=0).tolist()
