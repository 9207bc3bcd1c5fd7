"""Charts of `kit report`: matplotlib figures rendered to inline PNG data URIs (no file, no network)."""
from __future__ import annotations

import base64
import io
from datetime import datetime
from pathlib import Path

import numpy as np

from .metrics import LOWER_IS_BETTER


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # no display where reports are built
    import matplotlib.pyplot as plt
    return plt


def png_uri(data: bytes) -> str:
    """PNG bytes as a data: URI an <img> shows offline."""
    return "data:image/png;base64," + base64.b64encode(data).decode()


def file_uri(path: Path) -> str:
    """An existing PNG file inlined."""
    return png_uri(Path(path).read_bytes())


def figure_uri(fig, dpi: int = 80) -> str:
    """Render and close a figure; its PNG as a data URI."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return png_uri(buf.getvalue())


def learning_curves(metrics: dict[int, list[dict]], metric: str) -> str | None:
    """Train loss, validation score and learning rate by epoch, one line per fold."""
    if not any(metrics.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    panels = (("train_loss", "train loss"), ("valid/score", f"valid {metric}"), ("lr", "learning rate"))
    for ax, (key, title) in zip(axes, panels):
        for fold, rows in sorted(metrics.items()):
            pts = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=f"fold {fold}")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.16, top=0.9, wspace=0.3)  # tight_layout: 0.5 s a figure
    return figure_uri(fig)


def class_f1(per_class: dict, tta: dict | None = None) -> str | None:
    """Per-class F1 bars of the OOF (and with TTA views beside them)."""
    if not per_class:
        return None
    plt = _pyplot()
    names = list(per_class)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(names) + 2), 2.8))
    w = 0.4 if tta else 0.8
    ax.bar(x - (w / 2 if tta else 0), [per_class[n] for n in names], w, label="OOF")
    if tta:
        ax.bar(x + w / 2, [tta.get(n, 0) for n in names], w, label="OOF with TTA")
        ax.legend(fontsize=7)
    ax.set_xticks(x, [str(n) for n in names], rotation=90 if len(names) > 12 else 0, fontsize=7)
    ax.set(ylim=(0, 1), ylabel="F1", title="per-class F1")
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.3 if len(names) > 12 else 0.12, top=0.88)
    return figure_uri(fig)


def cv_vs_leaderboard(points: dict[str, list[tuple]], recommended: str | None, title: str) -> str | None:
    """CV against public (left) and private (right) score, one colour per validation scheme."""
    if not points:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for col, ax in enumerate(axes):
        every = []
        for scheme, pts in sorted(points.items()):
            xy = [(p[1], p[2 + col]) for p in pts if p[2 + col] is not None]
            if xy:
                every += xy
                bold = scheme == recommended
                ax.scatter(*zip(*xy), s=40 if bold else 18, label=scheme + (" (recommended)" if bold else ""),
                           edgecolors="black" if bold else "none")
        if every:
            lo, hi = min(min(p) for p in every), max(max(p) for p in every)
            ax.plot([lo, hi], [lo, hi], "k:", lw=1)
            ax.legend(fontsize=7)
        ax.set(xlabel="CV", ylabel=("public", "private")[col] + " score")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    return figure_uri(fig)


def best_so_far(rows: list[dict], metric: str) -> str | None:
    """Public score of every scored submission over time, and the best one so far as a step line."""
    pts = [(datetime.fromisoformat(r["created_utc"]), r["public"]) for r in rows if r.get("public") is not None]
    if not pts:
        return None
    pts.sort()
    times, scores = zip(*pts)
    best = (np.minimum if metric in LOWER_IS_BETTER else np.maximum).accumulate(np.array(scores))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.scatter(times, scores, s=12, alpha=0.6, label="public score")
    ax.step(times, best, where="post", color="C3", label="best so far")
    ax.set(ylabel=f"public {metric}", title="public score over time")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.22, top=0.9)
    return figure_uri(fig)


def thumbnails(paths: list[Path], size: int = 128) -> list[str]:
    """Small PNG data URIs of image files (a tile grid in HTML lays out in no time, unlike many matplotlib axes)."""
    from PIL import Image
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(png_uri(buf.getvalue()))
    return out


def misclassified(comp, train_df, oof_path: Path, limit: int = 32) -> list[tuple[str, str]]:
    """(image URI, 'id: true -> predicted') of train images the OOF gets wrong, most confident mistakes first.

    Each image is its own small PNG with an HTML caption: a matplotlib grid of 32 axes takes seconds to lay out.
    """
    import pandas as pd

    from .tables import oof_labels
    oof = pd.read_parquet(oof_path)
    oof = oof[oof[comp.id_column].isin(set(train_df[comp.id_column]))]
    y, probs = oof_labels(comp, train_df, oof)
    pred = probs.argmax(1)
    wrong = np.nonzero(pred != y)[0]
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:limit]
    ids = oof[comp.id_column].to_numpy()[wrong]
    uris = thumbnails([comp.image_path(i, "train") for i in ids])
    return [(u, f"{i}: {comp.classes[y[k]]} -> {comp.classes[pred[k]]} ({probs[k, pred[k]]:.2f})")
            for u, i, k in zip(uris, ids, wrong)]
