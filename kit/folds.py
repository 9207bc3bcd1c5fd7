"""Folds: `folds.csv` (id, fold) beside competition.yaml, made once and then only read."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from sklearn.model_selection import StratifiedKFold

from .competition import Competition, CompetitionError, read_table


def folds_path(comp: Competition) -> Path:
    """Where the competition's folds live."""
    return comp.root / "folds.csv"


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes (recorded with every run that used it)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_stratified(df: pd.DataFrame, id_col: str, target: str, n: int, seed: int) -> pd.DataFrame:
    """Stratified k-fold assignment: one row per id with its validation fold."""
    skf = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed)
    fold = pd.Series(-1, index=df.index)
    for k, (_, valid) in enumerate(skf.split(df, df[target])):
        fold.iloc[valid] = k
    return pd.DataFrame({id_col: df[id_col].values, "fold": fold.values})


def write_folds(folds: pd.DataFrame, path: Path, force: bool = False) -> Path:
    """Write folds.csv; an existing file is kept unless force."""
    if path.exists() and not force:
        raise CompetitionError(f"{path} exists; pass --force to overwrite it (runs record its hash)")
    tmp = path.with_suffix(".tmp")
    folds.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def load_folds(comp: Competition, train: pd.DataFrame, n: int = 5, seed: int = 42) -> pd.DataFrame:
    """Read folds.csv, creating stratified folds first when the competition has none."""
    path = folds_path(comp)
    if not path.exists():
        write_folds(make_stratified(train, comp.id_column, comp.target, n, seed), path)
    folds = read_table(path)
    folds["fold"] = folds["fold"].astype(int)
    missing = set(train[comp.id_column]) - set(folds[comp.id_column])
    if missing:
        raise CompetitionError(f"{path}: {len(missing)} train id(s) have no fold, e.g. {sorted(missing)[:3]}")
    return folds
