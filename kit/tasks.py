"""One class per competition kind: what differs between multiclass, multilabel, multihead and segmentation.

Generic code asks `task_of(comp)` instead of branching on `comp.task`; a new kind is one new class
here (and its name in competition.TASKS).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import heads
from .competition import Competition, CompetitionError
from .folds import label_matrix
from .metrics import get_metric, per_class_f1

if TYPE_CHECKING:  # torch and timm (losses) load when a model is built: `kit folds` and friends stay quick
    import torch


class Task:
    """Multiclass: one softmax over the classes, one label per row (the other kinds change what differs)."""

    name = "multiclass"
    one_label_per_row = True  # one softmax over the table's columns: pseudo-labels, train.csv class checks
    one_submitted_label = True  # one class per submitted row: a confusion matrix has meaning
    fold_scheme = "stratified"  # how folds.csv is made when the competition has none
    masks = False  # predicts per-pixel masks (.npz tables, RLE submissions) rather than a probability table

    def __init__(self, comp: Competition, cv: dict | None = None):
        self.comp = comp

    def tune(self, y: np.ndarray, probs: np.ndarray) -> dict:
        """What this kind learns from a run's OOF for its submission (kept in cv.json); nothing here."""
        return {}

    def encode_targets(self, rows: pd.DataFrame, csv: str = "") -> np.ndarray:
        """Targets for training: (N,) class indices; an unknown value is named with its row."""
        comp = self.comp
        return heads.encode_column(rows, comp.target, comp.classes, csv, comp.id_column)

    def output_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """Model outputs to the probabilities the tables hold."""
        return logits.softmax(-1)

    def output_columns(self) -> list[str]:
        """Names of the probability columns of the oof/test tables."""
        return list(self.comp.classes)

    def groups(self, n_cols: int) -> list[int]:
        """Widths of the column ranges that are one distribution each (renormalised after a geometric mean)."""
        return [n_cols]

    def label_probs(self, probs: np.ndarray) -> np.ndarray:
        """Table probabilities to probabilities over the submitted classes (what the metric scores)."""
        return probs

    def compute_metrics(self, probs: np.ndarray, targets: np.ndarray) -> dict:
        """Validation metrics; `score` is the competition metric that selects the best epoch."""
        out = {"score": get_metric(self.comp.metric)(targets, probs),
               "accuracy": float((probs.argmax(1) == targets).mean())}
        out["loss"] = float(-np.log(np.clip(probs[np.arange(len(targets)), targets], 1e-7, 1)).mean())
        return out

    def build_loss(self, cfg, train_df: pd.DataFrame) -> torch.nn.Module:
        """The loss --loss names, with the train class counts (weighted_ce)."""
        return self._loss(cfg, train_df[self.comp.target], self.comp.classes)

    def _loss(self, cfg, column: pd.Series, classes: list, multilabel: bool = False) -> torch.nn.Module:
        from .losses import create_loss
        counts = column.value_counts().reindex(classes, fill_value=0).to_numpy()
        return create_loss(cfg.loss, len(classes), counts if cfg.loss == "weighted_ce" else None, cfg.smoothing,
                           cfg.focal_gamma, cfg.mixup > 0 or cfg.cutmix > 0, multilabel)

    def label_targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Truth over the submitted classes (what the metric scores): class indices here."""
        comp = self.comp
        return heads.encode_column(rows, comp.target, comp.classes, comp.train_csv, comp.id_column)

    def per_class_f1(self, y: np.ndarray, probs: np.ndarray) -> list[float]:
        """F1 of each submitted class on label probabilities."""
        return per_class_f1(y, probs)

    def sampler_labels(self, targets: np.ndarray) -> np.ndarray:
        """One class index per row for the class-balanced samplers."""
        return np.asarray(targets)

    def check_mixing(self) -> None:
        """Raise when MixUp/CutMix has no meaning for this kind."""

    def submission_labels(self, probs: np.ndarray) -> list[str]:
        """The label cell of each row of a `kind: label` submission."""
        return [self.comp.classes[i] for i in self.label_probs(probs).argmax(1)]

    def label_tokens(self, value: str) -> list[str]:
        """The class names one submission cell holds."""
        return [value.strip()]

    def submitted_probs(self, cells: pd.Series) -> np.ndarray:
        """Submitted label cells as a 0/1 matrix over the classes; an unknown or missing label adds nothing."""
        index = {c: i for i, c in enumerate(self.comp.classes)}
        out = np.zeros((len(cells), len(index)))
        for row, cell in enumerate(cells.fillna("")):
            for token in self.label_tokens(str(cell)):
                if token in index:
                    out[row, index[token]] = 1.0
        return out


class MultiheadTask(Task):
    """One softmax per head; the submitted composite class is the product of the heads (kit/heads.py)."""

    name = "multihead"
    one_label_per_row = False

    def encode_targets(self, rows: pd.DataFrame, csv: str = "") -> np.ndarray:
        """(N, heads) class indices, checked against the composite label when the table has it."""
        return heads.encode_targets(self.comp, rows, csv)

    def output_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """A softmax over each head's slice (columns `head:class`)."""
        return heads.output_probs(self.comp, logits)

    def output_columns(self) -> list[str]:
        """head:class for every head."""
        return [f"{h}:{c}" for h, cs in self.comp.heads.items() for c in cs]

    def groups(self, n_cols: int) -> list[int]:
        """Each head is one distribution."""
        return heads.head_sizes(self.comp)

    def label_probs(self, probs: np.ndarray) -> np.ndarray:
        """Composite-class probabilities: the product of the heads'."""
        return heads.composite_probs(self.comp, probs)

    def compute_metrics(self, probs: np.ndarray, targets: np.ndarray) -> dict:
        """The metric per head and on the composite label (`score`)."""
        return heads.head_metrics(self.comp, probs, targets)

    def build_loss(self, cfg, train_df: pd.DataFrame) -> torch.nn.Module:
        """One loss per head, summed."""
        from .losses import MultiHeadLoss
        losses = {h: self._loss(cfg, train_df[h], c) for h, c in self.comp.heads.items()}
        return MultiHeadLoss(losses, heads.head_sizes(self.comp))

    def sampler_labels(self, targets: np.ndarray) -> np.ndarray:
        """Balance the composite classes."""
        return heads.composite_index(self.comp, np.asarray(targets))

    def check_mixing(self) -> None:
        """MixUp/CutMix mix one label per row."""
        from .mixing import MixingError
        raise MixingError("--mixup/--cutmix mix one label per row; a multihead competition has several")


class MultilabelTask(Task):
    """Independent sigmoids: a row holds any number of classes, space-separated in its label cell."""

    name = "multilabel"
    one_label_per_row = one_submitted_label = False
    fold_scheme = "multilabel"  # iterative stratification over the label matrix

    def __init__(self, comp: Competition, cv: dict | None = None):
        super().__init__(comp)
        tuned = (cv or {}).get("thresholds") or {}  # tuned on the run's OOF by `tune`
        self.thresholds = np.array([tuned.get(c, 0.5) for c in comp.classes])

    def tune(self, y: np.ndarray, probs: np.ndarray) -> dict:
        """Per-class thresholds that maximise each class's OOF F1, and the metric with them (`cv_tuned`)."""
        from sklearn.metrics import f1_score
        grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
        best = [max(grid, key=lambda t: (f1_score(y[:, k], probs[:, k] >= t, zero_division=0), -abs(t - 0.5)))
                for k in range(y.shape[1])]
        self.thresholds = np.array(best)
        decided = (probs >= self.thresholds).astype(float)  # 0/1 rows: any metric's 0.5 cut keeps them
        return {"thresholds": dict(zip(self.comp.classes, map(float, best))),
                "cv_tuned": get_metric(self.comp.metric)(y, decided)}

    def encode_targets(self, rows: pd.DataFrame, csv: str = "") -> np.ndarray:
        """(N, classes) 0/1 float targets (BCE and asymmetric losses take them as they are)."""
        return self.label_targets(rows).astype(np.float32)

    def label_targets(self, rows: pd.DataFrame) -> np.ndarray:
        """(N, classes) 0/1 matrix; an unknown label is named with its row."""
        return label_matrix(self.comp, rows)

    def output_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """A sigmoid per class."""
        return logits.sigmoid()

    def groups(self, n_cols: int) -> list[int]:
        """Every column stands alone."""
        return [1] * n_cols

    def compute_metrics(self, probs: np.ndarray, targets: np.ndarray) -> dict:
        """The competition metric (`score`), micro/macro F1 at the thresholds, mAP and the BCE."""
        y = targets.astype(int)
        out = {"score": get_metric(self.comp.metric)(y, probs)}
        for name in ("f1_micro", "f1_macro", "map"):
            out[name] = get_metric(name)(y, probs)
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        out["loss"] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
        return out

    def build_loss(self, cfg, train_df: pd.DataFrame) -> torch.nn.Module:
        """bce or asymmetric on the 0/1 targets (ce is refused with a hint)."""
        from .losses import create_loss
        return create_loss(cfg.loss, len(self.comp.classes), None, cfg.smoothing, cfg.focal_gamma,
                           cfg.mixup > 0 or cfg.cutmix > 0, multilabel=True)

    def per_class_f1(self, y: np.ndarray, probs: np.ndarray) -> list[float]:
        """F1 of each class at its threshold."""
        from sklearn.metrics import f1_score
        return f1_score(y, probs >= self.thresholds, average=None, zero_division=0).tolist()

    def sampler_labels(self, targets: np.ndarray) -> np.ndarray:
        """Refused: balanced samplers draw one class per row."""
        raise ValueError("--sampler=balanced/sqrt draws rows by their one class; multilabel rows have several: "
                         "use --sampler=shuffle")

    def check_mixing(self) -> None:
        """Refused: timm's Mixup mixes class indices."""
        from .mixing import MixingError
        raise MixingError("--mixup/--cutmix mix one class index per row; a multilabel competition has 0/1 rows")

    def submission_labels(self, probs: np.ndarray) -> list[str]:
        """The classes at or above their threshold, space-separated (empty when none is)."""
        classes = np.asarray(self.comp.classes)
        return [" ".join(classes[row]) for row in probs >= self.thresholds]

    def label_tokens(self, value: str) -> list[str]:
        """Space-separated class names."""
        return value.split()


class SegmentationTask(Task):
    """Masks per pixel: SegTrainer (kit/segmentation.py) trains them and kit/seg_submit.py writes RLE."""

    name = "segmentation"
    one_label_per_row = one_submitted_label = False
    masks = True


TASKS = {cls.name: cls for cls in (Task, MultilabelTask, MultiheadTask, SegmentationTask)}


def task_of(comp: Competition, cv: dict | None = None) -> Task:
    """The Task object of a competition; `cv` (a run's cv.json) carries what `tune` learnt on its OOF."""
    if comp.task not in TASKS:
        raise CompetitionError(f"{comp.root}/competition.yaml: task: {comp.task!r} is not one of {sorted(TASKS)}")
    return TASKS[comp.task](comp, cv)
