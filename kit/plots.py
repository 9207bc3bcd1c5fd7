"""Run-level figures: the confusion matrix of the whole OOF table."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Write a PNG of the confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    side = max(4.0, 0.45 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side))
    ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=np.arange(len(classes)), display_labels=classes,
                                            ax=ax, colorbar=False, xticks_rotation=90 if len(classes) > 12 else 0)
    ax.set_title(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)
