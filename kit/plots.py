"""Run-level figures: the confusion matrix of the whole OOF table."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .figures import confusion_figure, save_figure


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Write a PNG of the confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    fig = confusion_figure(y_true, y_pred, classes)
    fig.axes[0].set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
