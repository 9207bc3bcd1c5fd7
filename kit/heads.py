"""Multi-head outputs: one softmax, loss and metric per head; a composite label for the submission.

A multihead competition.yaml names its heads after train.csv columns; its first target column
is the composite label (what is submitted and scored) and `classes` lists the composite classes
in product order (the last head varies fastest), e.g. mask(3) x gender(2) x age(3) = 18 classes
with index = mask * 6 + gender * 3 + age:

    task: multihead
    target_columns: [class, mask, gender, age]
    heads: {mask: [wear, incorrect, none], gender: [male, female], age: [young, middle, old]}
    classes: ["0", "1", ..., "17"]

The composite probability is the product of the head probabilities: an argmax over the 18
classes needs nothing else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .competition import Competition, CompetitionError
from .metrics import get_metric

if TYPE_CHECKING:  # a tensor only arrives once torch is loaded: the table-only commands never import it
    import torch


def head_sizes(comp: Competition) -> list[int]:
    """Number of classes of each head, in head order."""
    return [len(v) for v in comp.heads.values()]


def check_heads(comp: Competition) -> None:
    """The composite classes must be one per combination of head classes."""
    n = int(np.prod(head_sizes(comp)))
    if len(comp.classes) != n:
        raise CompetitionError(f"{comp.root / 'competition.yaml'}: classes: a multihead competition with heads "
                               f"{ {h: len(c) for h, c in comp.heads.items()} } needs {n} composite classes "
                               f"in product order, found {len(comp.classes)}")


def encode_targets(comp: Competition, rows: pd.DataFrame, csv: str = "") -> np.ndarray:
    """(N, heads) class indices of a multihead table; an unknown value is named with its row."""
    check_heads(comp)
    heads = np.stack([encode_column(rows, h, classes, csv, comp.id_column) for h, classes in comp.heads.items()], 1)
    if comp.target not in comp.heads and comp.target in rows.columns:  # the composite label must agree
        label = encode_column(rows, comp.target, comp.classes, csv, comp.id_column)
        wrong = np.flatnonzero(label != composite_index(comp, heads))
        if len(wrong):
            i = int(wrong[0])
            raise CompetitionError(f"{_where(rows, i, csv, comp.id_column)} column {comp.target!r} = "
                                   f"{rows[comp.target].iloc[i]!r} disagrees with its heads "
                                   f"{ {h: rows[h].iloc[i] for h in comp.heads} }")
    return heads


def _where(rows: pd.DataFrame, i: int, csv: str, id_column: str) -> str:
    row = f"{id_column} {rows[id_column].iloc[i]!r}" if id_column in rows.columns else f"row {i}"
    return f"{csv or 'train table'}: {row}"


def encode_column(rows: pd.DataFrame, column: str, classes: list, csv: str, id_column: str = "id") -> np.ndarray:
    """Class index of every row's value in `column`; an unknown value is named with its row."""
    if column not in rows.columns:
        raise CompetitionError(f"{csv or 'train table'}: no column {column!r} (found {list(rows.columns)})")
    index = {c: i for i, c in enumerate(classes)}
    codes = rows[column].map(index)
    bad = codes.isna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise CompetitionError(f"{_where(rows, i, csv, id_column)} column {column!r} = {rows[column].iloc[i]!r} "
                               f"is not one of {classes}")
    return codes.to_numpy(np.int64)


def output_probs(comp: Competition, logits: torch.Tensor) -> torch.Tensor:
    """A softmax over each head's slice (columns `head:class`)."""
    import torch
    return torch.cat([chunk.softmax(-1) for chunk in logits.split(head_sizes(comp), -1)], -1)


def split_heads(comp: Competition, probs: np.ndarray) -> list[np.ndarray]:
    """The (N, sum of heads) probability matrix as one matrix per head."""
    return np.split(probs, np.cumsum(head_sizes(comp))[:-1], axis=1)


def composite_probs(comp: Competition, probs: np.ndarray) -> np.ndarray:
    """Probability of every composite class: the product of its heads' probabilities."""
    out = np.ones((len(probs), 1))
    for p in split_heads(comp, probs):
        out = (out[:, :, None] * p[:, None, :]).reshape(len(probs), -1)  # last head varies fastest
    return out


def composite_index(comp: Competition, head_targets: np.ndarray) -> np.ndarray:
    """Composite class index of (N, heads) head indices."""
    return np.ravel_multi_index(tuple(head_targets.T), head_sizes(comp))


def head_metrics(comp: Competition, probs: np.ndarray, targets: np.ndarray) -> dict:
    """The competition metric per head and on the composite label (`score`, which selects the best epoch)."""
    metric = get_metric(comp.metric)
    out = {f"{h}_score": metric(targets[:, k], p) for k, (h, p) in enumerate(zip(comp.heads, split_heads(comp, probs)))}
    joint, y = composite_probs(comp, probs), composite_index(comp, targets)
    out["score"] = metric(y, joint)
    out["accuracy"] = float((joint.argmax(1) == y).mean())
    out["loss"] = float(-np.log(np.clip(joint[np.arange(len(y)), y], 1e-7, 1)).mean())
    return out
