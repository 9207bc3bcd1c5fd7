"""`kit ensemble`: blend runs' OOF and test tables into a new run folder that downstream treats as an experiment."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import differential_evolution
from scipy.stats import rankdata

from .competition import Competition
from .lineage import git_state
from .metrics import LOWER_IS_BETTER, get_metric, is_better
from .rundir import RunDir
from .tables import current_predict, output_columns, write_confusion, write_probs
from .tasks import task_of

METHODS = ("soft", "hard", "rank", "weighted")


def member_oof_path(run_dir: Path) -> Path:
    """The OOF table that matches a run's test.parquet: oof_tta.parquet after `kit predict`, else oof.parquet."""
    run = RunDir(run_dir)
    tta = run.table("oof_tta")
    return tta if tta.exists() and (current_predict(run_dir) or {}).get("oof_tta") else run.table("oof")


def load_members(names: list[str], runs: str | Path) -> tuple[Competition, list, np.ndarray, np.ndarray, dict]:
    """(competition, OOF ids, OOF stack (m, N, C), test stack, test ids + files): aligned by id, checked alike."""
    comps, oofs, tests = [], [], []
    for name in names:
        run = RunDir(Path(runs) / name)
        oof_path, test_path = member_oof_path(run.path), run.table("test")
        for path in (oof_path, test_path):
            if not path.exists():
                raise FileNotFoundError(f"{path} not found: `--fold=all` training (or `kit predict`) writes it")
        comps.append(run.competition())
        oofs.append((oof_path, pd.read_parquet(oof_path)))
        tests.append((test_path, pd.read_parquet(test_path)))
    comp = comps[0]
    for name, c in zip(names, comps):
        if c.root.resolve() != comp.root.resolve():
            raise ValueError(f"{name} is a run of {c.root}, {names[0]} of {comp.root}: one competition per ensemble")
    cols = output_columns(comp)
    oof_ids, oof_stack = _align(oofs, comp.id_column, cols)
    test_ids, test_stack = _align(tests, comp.id_column, cols)
    return comp, oof_ids, oof_stack, test_stack, {"test_ids": test_ids, "oof_files": [str(p) for p, _ in oofs]}


def _align(tables: list, id_col: str, cols: list[str]) -> tuple[list, np.ndarray]:
    """Stack tables on the first one's id order; a missing or extra id is an error naming the file."""
    first_path, first = tables[0]
    ids = first[id_col].astype(str).tolist()
    stack = []
    for path, df in tables:
        df = df.assign(**{id_col: df[id_col].astype(str)}).set_index(id_col)
        missing, extra = set(ids) - set(df.index), set(df.index) - set(ids)
        if missing or extra or df.index.duplicated().any():
            raise ValueError(f"{path}: ids differ from {first_path} ({len(missing)} missing, {len(extra)} extra, "
                             f"{int(df.index.duplicated().sum())} repeated), e.g. {sorted(missing | extra)[:3]}")
        absent = [c for c in cols if c not in df.columns]
        if absent:
            raise ValueError(f"{path}: missing probability column(s) {absent}")
        stack.append(df.loc[ids, cols].to_numpy(np.float64))
    return ids, np.stack(stack)


def _slices(comp: Competition, n_cols: int) -> list[slice]:
    """Column ranges that are one probability distribution each: the heads, or all classes."""
    sizes = task_of(comp).groups(n_cols)
    edges = np.cumsum([0, *sizes])
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def blend(stack: np.ndarray, method: str, comp: Competition, weights: np.ndarray | None = None) -> np.ndarray:
    """Combine (members, rows, classes) probabilities into (rows, classes) probabilities.

    soft/weighted: (weighted) mean. hard: majority vote of the arg-max classes, ties broken by the soft mean,
    written as (votes + soft mean) / (members + 1) so rows still sum to 1. rank: each column ranked over
    the rows per member (0..1), ranks averaged, rows renormalised. An independent (multilabel) column
    votes p >= 0.5 per member and keeps its averaged rank unnormalised; its threshold is tuned afterwards.
    """
    m = len(stack)
    w = np.full(m, 1 / m) if weights is None else np.asarray(weights, np.float64)
    if method in ("soft", "weighted"):
        return np.tensordot(w, stack, axes=1)
    out = np.empty(stack.shape[1:])
    for s in _slices(comp, stack.shape[2]):
        part = stack[:, :, s]
        independent = part.shape[2] == 1  # a multilabel column: a yes/no of its own, not a distribution
        if method == "hard" and independent:
            out[:, s] = ((part >= 0.5).sum(0) + part.mean(0)) / (m + 1)
        elif method == "rank" and independent:
            out[:, s] = np.stack([rankdata(p, axis=0) / len(p) for p in part]).mean(0)
        elif method == "hard":
            votes = np.eye(part.shape[2])[part.argmax(2)].sum(0)  # (rows, classes) vote counts
            out[:, s] = (votes + part.mean(0)) / (m + 1)
        elif method == "rank":
            ranks = np.stack([rankdata(p, axis=0) / len(p) for p in part]).mean(0)
            out[:, s] = ranks / ranks.sum(1, keepdims=True)
        else:
            raise ValueError(f"--method={method!r}: choose one of {METHODS}")
    return out


def make_scorer(comp: Competition, oof_ids: list):
    """(score(probs) with the competition metric on the OOF rows, their class indices)."""
    train = comp.read_train().set_index(comp.id_column)
    unknown = [i for i in oof_ids if i not in train.index]
    if unknown:
        raise ValueError(f"{len(unknown)} OOF id(s) are not in {comp.path(comp.train_csv)}, e.g. {unknown[:3]}")
    task, metric = task_of(comp), get_metric(comp.metric)
    y = task.label_targets(train.loc[oof_ids].reset_index())
    return lambda p: metric(y, task.label_probs(p)), y


def fit_weights(stack: np.ndarray, score, metric: str, seed: int = 0) -> np.ndarray:
    """Non-negative weights summing to 1 that optimise the metric of the weighted mean on the OOF.

    The metric is a step function of the weights (arg-max), so a gradient-free search (differential
    evolution) is used; every single member and the plain mean are candidates too, so the result is
    never worse on this OOF than the best member.
    """
    m = len(stack)
    sign = 1 if metric in LOWER_IS_BETTER else -1
    norm = lambda z: np.full(m, 1 / m) if z.sum() <= 0 else z / z.sum()  # noqa: E731
    res = differential_evolution(lambda z: sign * score(np.tensordot(norm(z), stack, axes=1)), [(0, 1)] * m,
                                 seed=seed, maxiter=60, popsize=12, tol=1e-6, polish=False)
    best_w, best = None, None
    for w in [norm(res.x), np.full(m, 1 / m), *np.eye(m)]:
        s = score(np.tensordot(w, stack, axes=1))
        if is_better(metric, s, best):
            best_w, best = w, s
    return best_w


def ensemble_runs(names: list[str], method: str = "soft", name: str = "", runs: str | Path = "runs",
                  seed: int = 0) -> dict:
    """Blend runs/<names> into runs/<name>: oof.parquet, test.parquet, cv.json, ensemble.json, lineage.json."""
    if method not in METHODS:
        raise ValueError(f"--method={method!r}: choose one of {METHODS}")
    if len(names) < 2:
        raise ValueError(f"an ensemble needs two or more runs, got {names}")
    if len(set(names)) != len(names) or name in names:
        raise ValueError(f"--name={name!r} and the members {names} must all differ")
    out, run = Path(runs) / name, RunDir(Path(runs) / name)
    if run.has_config() or any(out.glob("fold*")):
        raise ValueError(f"{out} is a trained run, not an ensemble: choose another --name")
    comp, oof_ids, oof_stack, test_stack, extra = load_members(names, runs)
    score, y = make_scorer(comp, oof_ids)
    weights = np.full(len(names), 1 / len(names))
    if method == "weighted":
        weights = fit_weights(oof_stack, score, comp.metric, seed)
    oof, test = blend(oof_stack, method, comp, weights), blend(test_stack, method, comp, weights)
    members_cv = {n: score(s) for n, s in zip(names, oof_stack)}
    cv = score(oof)
    probs = task_of(comp).label_probs(oof)
    out.mkdir(parents=True, exist_ok=True)
    write_probs(run.table("oof"), oof_ids, oof, comp)
    write_probs(run.table("test"), extra["test_ids"], test, comp)
    w = {n: float(v) for n, v in zip(names, weights)}
    task = task_of(comp)
    info = {"cv": cv, "metric": comp.metric, "method": method, "weights": w, "members_cv": members_cv,
            **task.tune(y, probs), "per_class_f1": dict(zip(comp.classes, task.per_class_f1(y, probs)))}
    run.write_json("cv", info)
    run.write_json("ensemble", {"members": w, "method": method, "competition": str(comp.root),
                                "oof_tables": extra["oof_files"]})
    hashes = {m.get("folds_hash") for m in (RunDir(Path(runs) / n).read_json("lineage") for n in names) if m}
    lineage = {"experiment": name, "competition": str(comp.root), "members": names,
               "folds_hash": hashes.pop() if len(hashes) == 1 else None, **git_state()}
    run.write_json("lineage", lineage)
    write_confusion(out, comp, comp.read_train(), pd.read_parquet(run.table("oof")))
    return {**info, "run_dir": str(out)}
