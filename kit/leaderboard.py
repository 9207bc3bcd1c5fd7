"""The local leaderboard: scores a submission against a hidden solution, as Kaggle would."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .competition import Competition, CompetitionError, read_table
from .metrics import get_metric
from .tasks import task_of


def has_leaderboard(comp: Competition) -> bool:
    """Whether the competition ships a local solution file (the demo does)."""
    return bool(comp.leaderboard) and comp.path(comp.leaderboard).exists()


def submission_probs(comp: Competition, sub, ids) -> np.ndarray:
    """The submission as a probability matrix in `ids` order: one-hot labels or the given probabilities.

    An id the submission lacks, or a label that is not a class, gets an all-zero row: it can only be
    scored wrong, as on Kaggle.
    """
    table = sub.drop_duplicates(comp.id_column).set_index(comp.id_column).reindex(list(ids))
    if comp.submission.get("kind", "label") == "probs":
        cols = [c for c in table.columns if c in set(comp.classes)] or list(table.columns)
        return table[cols].apply(lambda c: c.astype(float)).fillna(0.0).to_numpy(np.float64)
    return task_of(comp).submitted_probs(table[comp.target])


def score_submission(comp: Competition, csv: str | Path) -> dict:
    """Public and private scores of a submission against the solution's Usage split."""
    if not has_leaderboard(comp):
        raise CompetitionError(f"{comp.root}: no local leaderboard (competition.yaml: leaderboard)")
    if comp.submission.get("kind") == "rle":
        from .seg_submit import score_rle_submission
        return score_rle_submission(comp, csv)
    solution = read_table(comp.path(comp.leaderboard))
    sub = read_table(Path(csv))
    task, metric = task_of(comp), get_metric(comp.metric)
    out = {}
    for usage in ("Public", "Private"):
        part = solution[solution["Usage"] == usage]
        y = task.label_targets(part)
        out[usage.lower()] = metric(y, submission_probs(comp, sub, part[comp.id_column]))
    return out
