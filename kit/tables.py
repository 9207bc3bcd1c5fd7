"""Prediction tables keyed by id (one column per class), and the run-level merge of fold tables."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .competition import Competition
from .metrics import get_metric
from .rundir import RunDir
from .tasks import task_of


def write_probs(path: Path, ids: list, probs: np.ndarray, comp: Competition) -> None:
    """Write id + one float column per class to parquet, atomically."""
    df = pd.DataFrame(probs.astype(np.float32), columns=output_columns(comp))
    df.insert(0, comp.id_column, [str(i) for i in ids])
    tmp = Path(path).with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def output_columns(comp: Competition) -> list[str]:
    """Names of the probability columns: the classes, or head:class for multi-head."""
    return task_of(comp).output_columns()


def read_probs(path: Path, comp: Competition) -> tuple[list, np.ndarray]:
    """ids and the probability matrix of a table written by write_probs."""
    df = pd.read_parquet(path)
    return df[comp.id_column].astype(str).tolist(), df[output_columns(comp)].to_numpy(np.float64)


def oof_labels(comp: Competition, train_df: pd.DataFrame, oof: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(truth per OOF row, label probabilities): multi-head tables give composite-class probabilities."""
    task = task_of(comp)
    y = task.label_targets(train_df.set_index(comp.id_column).loc[oof[comp.id_column]].reset_index())
    probs = oof[output_columns(comp)].to_numpy(np.float64)
    return y, task.label_probs(probs)  # multihead: scored on the composite label, as submitted


def score_oof(comp: Competition, train_df: pd.DataFrame, oof: pd.DataFrame) -> dict:
    """The competition metric and per-class F1 of an OOF table against the train labels."""
    y, probs = oof_labels(comp, train_df, oof)
    return {"score": get_metric(comp.metric)(y, probs),
            "per_class_f1": dict(zip(comp.classes, task_of(comp).per_class_f1(y, probs)))}


def collect_run(run_dir: Path, comp: Competition, train_df: pd.DataFrame, folds: pd.DataFrame) -> dict:
    """Merge fold tables: oof.parquet + cv.json once every fold has one; test.parquet = mean of fold tests."""
    run_dir, run = Path(run_dir), RunDir(run_dir)
    all_folds = sorted(folds.fold.unique().tolist())
    fold_oofs = {k: run.table("oof", k) for k in all_folds}
    done = [k for k, p in fold_oofs.items() if p.exists()]
    result = {"folds_done": done, "cv": None}
    per_fold = {k: score_oof(comp, train_df, pd.read_parquet(fold_oofs[k]))["score"] for k in done}
    result["per_fold"] = per_fold
    if len(done) == len(all_folds):
        oof = pd.concat([pd.read_parquet(fold_oofs[k]) for k in all_folds], ignore_index=True)
        oof = oof[oof[comp.id_column].isin(set(train_df[comp.id_column]))]
        oof.to_parquet(run.table("oof"), index=False)
        scored = score_oof(comp, train_df, oof)
        result.update(cv=scored["score"], per_class_f1=scored["per_class_f1"], metric=comp.metric)
        result.update(task_of(comp).tune(*oof_labels(comp, train_df, oof)))  # multilabel: per-class thresholds
        run.write_json("cv", result)
        write_confusion(run_dir, comp, train_df, oof)
    tests = [run.table("test", k) for k in done]
    tests = [p for p in tests if p.exists()]
    if tests:
        frames = [pd.read_parquet(p) for p in tests]
        mean = frames[0].copy()
        cols = output_columns(comp)
        mean[cols] = np.mean([f[cols].to_numpy() for f in frames], axis=0)
        mean.to_parquet(run.table("test"), index=False)
        result["test_folds"] = [k for k in done if run.table("test", k).exists()]
    return result


def current_predict(run_dir: Path) -> dict | None:
    """runs/<exp>/predict.json unless test.parquet has changed since `kit predict` wrote both (retraining)."""
    run = RunDir(run_dir)
    info, test = run.read_json("predict"), run.table("test")
    if info is None or not test.exists():
        return None
    from .folds import file_hash
    return info if info.get("test_sha256") in (None, file_hash(test)) else None


def write_confusion(run_dir: Path, comp: Competition, train_df: pd.DataFrame, oof: pd.DataFrame,
                    name: str = "confusion.png") -> Path | None:
    """The OOF confusion matrix as runs/<exp>/confusion.png (None where rows hold several classes)."""
    from .plots import plot_confusion
    if not task_of(comp).one_submitted_label:
        return None
    y, probs = oof_labels(comp, train_df, oof)
    return plot_confusion(y, probs.argmax(1), list(comp.classes), Path(run_dir) / name,
                          f"{Path(run_dir).name}: OOF confusion ({len(y)} rows)")
