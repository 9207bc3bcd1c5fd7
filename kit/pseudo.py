"""Pseudo-labelling rounds: label confident test rows, train again on train + pseudo rows, repeat.

Leakage rule: fold k's pseudo-labels come from fold k's own model (its `fold<k>/test.parquet`),
which never saw fold k's validation rows. An average over all fold models would carry what the
other models learnt from fold k's validation rows into fold k's training, and inflate its CV.
Pseudo rows only ever join training parts; CV is measured on real labels alone.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .competition import Competition, CompetitionError, load_competition
from .rundir import RunDir
from .tables import current_predict, output_columns
from .tasks import task_of


def select_rows(probs: np.ndarray, threshold: float = 0.9, per_class_top: int = 0) -> np.ndarray:
    """Boolean mask of confident rows: max prob >= threshold, or each class's top-k by its own prob."""
    if per_class_top:
        keep = np.zeros(len(probs), bool)
        pred = probs.argmax(1)
        for c in range(probs.shape[1]):
            rows = np.flatnonzero(pred == c)
            keep[rows[np.argsort(-probs[rows, c], kind="stable")[:per_class_top]]] = True
        return keep
    return probs.max(1) >= threshold


def fold_test_table(run_dir: Path, fold: int) -> Path:
    """The test predictions of one fold model: TTA'd when `kit predict` wrote them for this test table, else plain."""
    run = RunDir(run_dir)
    tta = (current_predict(run_dir) or {}).get("fold_tests") or {}
    if str(fold) in tta and (run.path / tta[str(fold)]).exists():
        return run.path / tta[str(fold)]
    path = run.table("test", fold)
    if path.exists():
        return path
    raise CompetitionError(f"{run_dir}/fold{fold}: no test predictions (train with predict_test, or run kit predict)")


def label_source(run_dir: Path, folds: list[int]) -> dict:
    """Which predictions the pseudo-labels come from: per fold the table, and the TTA views when there are any."""
    run = RunDir(run_dir)
    paths = {k: fold_test_table(run_dir, k) for k in folds}
    tta = any(path != run.table("test", k) for k, path in paths.items())
    tables = {str(k): str(path.relative_to(run_dir)) for k, path in paths.items()}
    info = (current_predict(run_dir) or {}) if tta else {}
    return {"run": Path(run_dir).name, "tta": tta, "views": info.get("views", ["none"]),
            "method": info.get("method"), "tables": tables}


def make_pseudo_table(run_dir: Path, comp: Competition, folds: list[int], threshold: float,
                      per_class_top: int, soft: bool) -> pd.DataFrame:
    """One row per (fold, confident test id): the label, as probabilities (soft) or one-hot (hard)."""
    cols = output_columns(comp)
    parts = []
    for k in folds:
        table = pd.read_parquet(fold_test_table(run_dir, k))
        probs = table[cols].to_numpy(np.float64)
        keep = select_rows(probs, threshold, per_class_top)
        labels = probs[keep] if soft else np.eye(len(cols))[probs[keep].argmax(1)]
        part = pd.DataFrame(labels.astype(np.float32), columns=cols)
        part.insert(0, "fold", k)
        part.insert(0, comp.id_column, table[comp.id_column].to_numpy()[keep])
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def check_pseudo(table: pd.DataFrame, comp: Competition, train_ids: set, path: Path) -> None:
    """A pseudo table must label test ids only, with the competition's columns."""
    missing = [c for c in [comp.id_column, "fold", *output_columns(comp)] if c not in table.columns]
    if missing:
        raise CompetitionError(f"{path}: missing column(s) {missing}")
    clash = set(table[comp.id_column]) & train_ids
    if clash:
        raise CompetitionError(f"{path}: {len(clash)} pseudo id(s) are train ids, e.g. {sorted(clash)[:3]}")


def summarize_round(table: pd.DataFrame, comp: Competition, previous: pd.DataFrame | None) -> dict:
    """Rows added per class (over all folds' tables) and agreement with the previous round's labels."""
    cols = output_columns(comp)
    label = pd.Series(np.array(cols)[table[cols].to_numpy().argmax(1)], index=table.index)
    out = {"rows": int(len(table)), "unique_ids": int(table[comp.id_column].nunique()),
           "per_class": {c: int((label == c).sum()) for c in cols}, "agreement": None}
    if previous is not None and len(previous):
        key = [comp.id_column, "fold"]
        prev = previous.assign(_label=np.array(cols)[previous[cols].to_numpy().argmax(1)])[key + ["_label"]]
        both = table.assign(_label=label)[key + ["_label"]].merge(prev, on=key, suffixes=("", "_prev"))
        out["agreement"] = float((both["_label"] == both["_label_prev"]).mean()) if len(both) else None
        out["overlap"] = int(len(both))
    return out


def _launch(experiment: Path, args: list[str], launcher: list[str]) -> None:
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", *launcher, str(experiment), *args]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=os.environ.copy())


def run_pseudo(exp: str, rounds: int = 3, threshold: float = 0.9, per_class_top: int = 0, soft: bool = False,
               runs: str = "runs", launcher: list[str] | None = None, extra_args: list[str] | None = None,
               submit=None, patience: int = 1) -> list[dict]:
    """Run pseudo-label rounds from runs/<exp>; each is runs/<exp>_pl<r>. Stops after `patience` rounds without a better CV."""
    runs_dir, launcher = Path(runs), launcher or []
    parent_dir = runs_dir / exp
    parent = RunDir(parent_dir)
    lineage = parent.read_json("lineage")
    experiment = Path(lineage["experiment_file"])
    if not experiment.exists():
        experiment = parent_dir / "experiment.py"
    base_cfg = parent.config()
    comp = load_competition(base_cfg.comp)
    if not task_of(comp).one_label_per_row:  # confidence = the top softmax probability: one label per row
        raise CompetitionError(f"{comp.root}/competition.yaml: task {comp.task!r}: kit pseudo labels multiclass "
                               "competitions only")
    train_ids = set(comp.read_train()[comp.id_column])
    parent_cv = parent.read_json("cv")["cv"]
    folds = sorted(int(p.name[4:]) for p in parent_dir.glob("fold*") if p.is_dir())
    report, previous, best_cv, stale = [], None, parent_cv, 0
    print(f"round 0 ({exp}): CV {parent_cv:.4f}")
    for r in range(1, rounds + 1):
        name = f"{exp}_pl{r}"
        round_dir, run = runs_dir / name, RunDir(runs_dir / name)
        round_dir.mkdir(parents=True, exist_ok=True)
        table_path = run.table("pseudo")
        source = (run.read_json("pseudo") or {}).get("labels_from")
        if not table_path.exists() or source is None:  # a resumed round keeps the labels it was started with
            source = label_source(parent_dir, folds)
        if not table_path.exists():
            table = make_pseudo_table(parent_dir, comp, folds, threshold, per_class_top, soft)
            check_pseudo(table, comp, train_ids, table_path)
            table.to_parquet(table_path.with_suffix(".tmp"), index=False)
            table_path.with_suffix(".tmp").replace(table_path)
        table = pd.read_parquet(table_path)
        meta = {"round": r, "parent": parent_dir.name, "root": exp, "threshold": threshold,
                "per_class_top": per_class_top, "soft": soft, "labels_from": source,
                **summarize_round(table, comp, previous)}
        run.write_json("pseudo", meta)
        print(format_source(r, source))
        if run.read_json("cv") is None:
            args = [f"--name={name}", "--fold=all", f"--pseudo={table_path}", f"--out_dir={runs_dir}",
                    f"--comp={base_cfg.comp}", *(extra_args or [])]
            _launch(experiment, args, launcher)
        cv = run.read_json("cv")["cv"]
        meta["cv"] = cv
        if submit is not None and meta.get("ledger_id") is None:
            meta.update(submit(name) or {})
        run.write_json("pseudo", meta)
        report.append(meta)
        print(format_round(meta, comp))
        stale = stale + 1 if cv <= best_cv else 0
        if stale >= patience:
            print(f"round {r}: CV {cv:.4f} did not beat {best_cv:.4f} for {stale} round(s); stopping")
            break
        best_cv, previous, parent_dir = max(best_cv, cv), table, round_dir
    return report


def submit_round(name: str, runs: str | Path = "runs", out: str | Path = "submissions",
                 target: str = "auto") -> dict:
    """Submit a round's test predictions once: a round already in the ledger is not submitted again."""
    from .ledger import Ledger
    from .submissions import submit_run
    ledger_path = Path(out) / "ledger.db"
    done = [r for r in Ledger(ledger_path).rows() if (r["experiments"] or [None])[0] == name] \
        if ledger_path.exists() else []
    row = done[-1] if done else submit_run(name, f"pseudo-label round {name}", runs, out, target=target)
    return {"ledger_id": row["id"], "public": row["public"], "private": row["private"]}


def format_source(r: int, source: dict) -> str:
    """Which predictions a round labels from, in one line."""
    how = f"with TTA ({','.join(source['views'])}, {source['method']})" if source["tta"] else "plain (no TTA)"
    return f"round {r}: labels from {source['run']}'s per-fold test predictions {how}: " + \
        ", ".join(source["tables"].values())


def format_round(meta: dict, comp: Competition) -> str:
    """One round's line of the report."""
    per_class = " ".join(f"{c}:{n}" for c, n in meta["per_class"].items())
    agree = "n/a" if meta.get("agreement") is None else f"{meta['agreement']:.3f}"
    scores = "".join(f" {k} {meta[k]:.4f}" for k in ("public", "private") if meta.get(k) is not None)
    return (f"round {meta['round']}: +{meta['rows']} pseudo rows ({meta['unique_ids']} test ids) [{per_class}] "
            f"agreement with previous {agree}; CV {comp.metric} {meta['cv']:.4f}{scores}")


def add_pseudo_rows(train_ds, path: str | Path, comp: Competition, fold: int, train_ids: set):
    """Train dataset of one fold plus that fold's pseudo rows; returns (dataset, soft?).

    Hard tables (one-hot rows) keep integer targets, so the experiment's own loss applies;
    soft tables turn every target into a probability row for the soft-target loss.
    """
    from .data import ImageDataset
    path = Path(path)
    if not path.exists():
        raise CompetitionError(f"--pseudo={path}: file not found")
    table = pd.read_parquet(path)
    check_pseudo(table, comp, train_ids, path)
    rows = table[table["fold"] == fold]
    probs = rows[output_columns(comp)].to_numpy(np.float32)
    soft = bool(len(table)) and not np.all(np.isin(table[output_columns(comp)].to_numpy(), (0.0, 1.0)))
    paths = list(train_ds.paths) + [str(comp.image_path(i, "test")) for i in rows[comp.id_column]]
    real = train_ds.targets.numpy()
    if soft:
        targets = np.vstack([np.eye(len(output_columns(comp)), dtype=np.float32)[real], probs])
    else:
        targets = np.concatenate([real, probs.argmax(1)]).astype(np.int64)
    ds = ImageDataset(paths, targets, train_ds.transform)
    ds.ids = list(getattr(train_ds, "ids", [])) + rows[comp.id_column].tolist()
    ds.pseudo_ids = set(rows[comp.id_column])
    return ds, soft
