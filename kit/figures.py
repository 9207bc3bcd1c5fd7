"""Figures a tracker shows: confusion matrix and a grid of misclassified validation images (matplotlib)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib.pyplot on the Agg backend: no display on servers, CI and training machines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    """Write a figure to a PNG atomically and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)
    tmp.replace(path)
    return path


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]):
    """Confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    from sklearn.metrics import confusion_matrix
    plt = pyplot()
    cm = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    side = max(3.0, 0.45 * len(classes) + 1.5)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(cm, cmap="Blues")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, [str(c) for c in classes], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [str(c) for c in classes], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i, j in zip(*np.nonzero(cm)):
        ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


def image_grid_figure(images: list[np.ndarray], titles: list[str], cols: int = 8):
    """A grid of HWC images with a title each (e.g. 'true -> predicted')."""
    plt = pyplot()
    cols = max(1, min(cols, len(images)))
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows), squeeze=False)  # room for two-line titles
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a figure to an HWC uint8 RGB array and close it (what trackers' image logging takes)."""
    plt = pyplot()
    fig.canvas.draw()
    arr = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return arr


def displayable(image) -> np.ndarray:
    """A CHW/HWC tensor or array scaled to HWC floats in [0, 1] (normalised inputs are min-max rescaled)."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return arr[..., 0] if arr.shape[-1] == 1 else arr
