"""RLE submissions: probability masks -> thresholded, resized, run-length encoded CSV; and their local score.

Two layouts (`submission.layout`). wide (default): the sample submission has the id column, then
one RLE column per class in `classes` order (binary: one column, whatever its name, e.g.
EncodedPixels). long: one row per image and class, keyed by `submission.key` (default
"{id}_{class}") in the id column, and one RLE column; the test ids then come from `test_csv`.
Pixel order is `submission.order`, else `masks.order`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .competition import Competition, CompetitionError, read_table
from .rle import rle_decode, rle_encode
from .rundir import RunDir
from .seg_data import MaskSpec, mask_spec, read_masks
from .seg_metrics import binarize, drop_small, pair_scores


def rle_columns(comp: Competition, spec: MaskSpec, columns: list[str]) -> list[str]:
    """The sample submission's RLE columns in class order; raise when they cannot map to the classes."""
    value_cols = [c for c in columns if c != comp.id_column]
    if submission_layout(comp) == "long":
        if len(value_cols) != 1:
            raise CompetitionError(f"{comp.path(comp.sample_submission)}: a long RLE submission has one RLE "
                                   f"column besides {comp.id_column!r}, got {value_cols}")
        return value_cols
    if len(value_cols) != len(spec.classes):
        raise CompetitionError(f"{comp.path(comp.sample_submission)}: {len(value_cols)} RLE column(s) "
                               f"{value_cols} for {len(spec.classes)} class(es) {list(spec.classes)}")
    if set(value_cols) == set(spec.classes):  # named after the classes: match by name, not position
        return list(spec.classes)
    return value_cols


def submission_layout(comp: Competition) -> str:
    """wide (one RLE column per class) or long (one row per image and class); long needs test_csv."""
    layout = str(comp.submission.get("layout", "wide"))
    if layout not in ("wide", "long"):
        raise CompetitionError(f"{comp.root}/competition.yaml: submission.layout: {layout!r} is not wide or long")
    if layout == "long" and not comp.test_csv:
        raise CompetitionError(f"{comp.root}/competition.yaml: test_csv: a long RLE submission keys rows by "
                               "image and class, so the test image ids must come from test_csv")
    return layout


def submission_order(comp: Competition, spec: MaskSpec) -> str:
    """Pixel order of the submission's RLE (the train masks' order unless the submission says otherwise)."""
    return str(comp.submission.get("order", spec.order))


def run_postprocess(run_dir: Path, default: float = 0.5) -> tuple:
    """(threshold(s), min_area(s)) tuned on OOF in cv.json, else the run's --threshold and no area floor."""
    run = RunDir(run_dir)
    tuned = run.read_json("cv") or {}
    if tuned.get("threshold") is not None:
        return tuned["threshold"], tuned.get("min_area", 0)
    if run.has_config():
        import yaml
        return (yaml.safe_load(run.config_path.read_text()) or {}).get("threshold", default), 0
    return default, 0


def masks_at_size(probs: np.ndarray, spec: MaskSpec, threshold, min_area=0) -> np.ndarray:
    """Probabilities at model resolution -> 0/1 masks (N, classes, H, W) at the images' original size.

    `min_area` counts pixels at model resolution; it is scaled to the original size.
    """
    out = np.zeros((len(probs), len(spec.classes), *spec.image_size), dtype=np.uint8)
    scale = float(np.prod(spec.image_size)) / float(np.prod(probs.shape[-2:])) if len(probs) else 1.0
    floor = np.asarray(min_area, dtype=np.float64) * scale
    for s in range(0, len(probs), 64):  # resize probabilities, then threshold: smoother edges than resizing masks
        p = torch.as_tensor(probs[s:s + 64], dtype=torch.float32)
        if tuple(p.shape[-2:]) != spec.image_size:
            p = F.interpolate(p, size=spec.image_size, mode="bilinear", align_corners=False)
        out[s:s + 64] = drop_small(binarize(p.numpy(), spec.mode, threshold), floor)
    return out


def build_rle_submission(comp: Competition, run_dir: Path, threshold=None, min_area=None) -> pd.DataFrame:
    """runs/<exp>/test_masks.npz as an RLE table in the sample submission's id order and header.

    Threshold and smallest kept area: the arguments, else cv.json's OOF-tuned ones, else --threshold.
    """
    spec, layout = mask_spec(comp), submission_layout(comp)
    path = RunDir(run_dir).masks("test")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: train with predict_test, or run `kit predict-seg`")
    ids, probs = read_masks(path)
    tuned_thr, tuned_area = run_postprocess(run_dir)
    thr = tuned_thr if threshold is None else threshold
    area = (tuned_area if threshold is None else 0) if min_area is None else min_area
    masks = masks_at_size(probs, spec, thr, area)
    sample = read_table(comp.path(comp.sample_submission))
    cols, order = rle_columns(comp, spec, list(sample.columns)), submission_order(comp, spec)
    pred = pd.DataFrame({comp.id_column: ids})
    if layout == "long":
        key = str(comp.submission.get("key", "{id}_{class}"))
        pred = pd.DataFrame([(key.format(id=i, **{"class": cls}), rle_encode(m[c], order))
                             for i, m in zip(ids, masks) for c, cls in enumerate(spec.classes)],
                            columns=[comp.id_column, cols[0]])
    else:
        for c, col in enumerate(cols):
            pred[col] = [rle_encode(m[c], order) for m in masks]
    sub = sample[[comp.id_column]].merge(pred, on=comp.id_column, how="left").fillna("")
    return sub[list(sample.columns)]


def decode_table(comp: Competition, spec: MaskSpec, table: pd.DataFrame, ids: list, name: str) -> np.ndarray:
    """(N, classes, H, W) masks of `ids` from an RLE table; an id the table lacks is an empty mask."""
    cols, order = rle_columns(comp, spec, list(table.columns)), submission_order(comp, spec)
    by_id = table.drop_duplicates(comp.id_column).set_index(comp.id_column)
    out = np.zeros((len(ids), len(cols), *spec.image_size), dtype=np.uint8)
    for n, i in enumerate(ids):
        if i in by_id.index:
            for c, col in enumerate(cols):
                out[n, c] = rle_decode(by_id.at[i, col], spec.image_size, order, where=f"{name} id {i!r} column {col!r}")
    return out


def score_rle_submission(comp: Competition, csv: str | Path) -> dict:
    """Public and private dice/IoU of an RLE submission against the local solution's Usage split.

    Every (image, class) pair weighs the same: a wide row holds one pair per class, a long row one.
    """
    spec = mask_spec(comp)
    solution = read_table(comp.path(comp.leaderboard))
    sub = read_table(Path(csv))
    sol_cols = [c for c in solution.columns if c != "Usage"]
    out = {}
    for usage in ("Public", "Private"):
        part = solution[solution["Usage"] == usage]
        ids = part[comp.id_column].tolist()
        truth = decode_table(comp, spec, part[sol_cols], ids, str(comp.path(comp.leaderboard)))
        pred = decode_table(comp, spec, sub, ids, str(csv))
        out[usage.lower()] = float(pair_scores(pred, truth, comp.metric).mean()) if ids else None
    return out
