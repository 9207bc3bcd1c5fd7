"""Folds: `folds.csv` (id, fold) beside competition.yaml (kit/workdir.py), made once and then only read."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

from .competition import Competition, CompetitionError, check_columns, read_table
from .workdir import folds_file, work_dir

SCHEMES = ("stratified", "group", "multilabel", "stratified_group", "adversarial")


def folds_path(comp: Competition) -> Path:
    """Where the competition's folds live (beside the data, or in the cache folder when the data is read-only)."""
    return folds_file(comp)


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


def strata(comp: Competition, df: pd.DataFrame, n: int = 0) -> np.ndarray:
    """One stratum label per row: the target, or the target columns joined (multi-head, several targets).

    Segmentation: which classes an image's RLE masks contain (PNG masks: one stratum); a stratum with fewer
    than `n` rows joins a shared 'rare' one, since stratified k-fold needs n members per stratum.
    """
    cols = comp.target_columns
    if comp.task == "segmentation":
        if (comp.extra.get("masks") or {}).get("source", "rle") != "rle":
            return np.full(len(df), "all")
        present = df[cols].apply(lambda r: "".join("1" if str(v).strip() else "0" for v in r), axis=1)
        return present.where(present.map(present.value_counts()) >= n, "rare").to_numpy()
    return df[cols[0]].to_numpy() if len(cols) == 1 else df[cols].astype(str).agg("|".join, axis=1).to_numpy()


def label_matrix(comp: Competition, df: pd.DataFrame) -> np.ndarray:
    """(rows, classes) 0/1 matrix of a multilabel table: space-separated labels, or one 0/1 column per class."""
    cols = comp.target_columns
    if len(cols) > 1:
        return df[cols].astype(float).astype(int).to_numpy()
    index = {c: i for i, c in enumerate(comp.classes)}
    y = np.zeros((len(df), len(comp.classes)), dtype=int)
    for row, value in enumerate(df[cols[0]].fillna("")):
        for token in str(value).split():
            if token not in index:
                raise CompetitionError(f"{comp.train_csv}: row {row + 2}, column {cols[0]}: label {token!r} is not "
                                       f"one of the competition's classes")
            y[row, index[token]] = 1
    return y


def make_folds(comp: Competition, df: pd.DataFrame, n: int = 5, scheme: str = "stratified", seed: int = 42,
               group: str = "") -> pd.DataFrame:
    """(id, fold) for every train row under one scheme; errors name the column or count at fault.

    The one fold assignment of the kit: `kit folds` and a first training run (no folds.csv yet) both call it,
    with the task's scheme by default, so the folds a run makes are the folds `kit folds` writes.
    """
    if scheme not in SCHEMES:
        raise CompetitionError(f"--scheme={scheme!r}: choose one of {SCHEMES}")
    if n < 2:
        raise CompetitionError(f"--n={n}: at least 2 folds")
    if len(df) < n:
        raise CompetitionError(f"{comp.train_csv}: {len(df)} rows cannot make {n} folds")
    needs_group = scheme in ("group", "stratified_group")
    if needs_group and not group:
        raise CompetitionError(f"--scheme={scheme} needs --group=<column> (rows of one group share a fold)")
    if needs_group and group not in df.columns:
        raise CompetitionError(f"{comp.train_csv}: no group column {group!r}; columns: {list(df.columns)}")
    if needs_group and df[group].nunique() < n:
        raise CompetitionError(f"{comp.train_csv}: column {group!r} has {df[group].nunique()} groups, "
                               f"fewer than {n} folds")
    if scheme == "adversarial":  # fold 0 = each class's most test-like rows (`kit adval`)
        return adversarial_folds(comp, df, n, seed)[0]
    if scheme == "stratified":
        splits = StratifiedKFold(n, shuffle=True, random_state=seed).split(df, strata(comp, df, n))
    elif scheme == "multilabel":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
        mskf = MultilabelStratifiedKFold(n_splits=n, shuffle=True, random_state=seed)
        splits = mskf.split(df, label_matrix(comp, df))
    elif scheme == "group":  # GroupKFold balances fold sizes; shuffle the group order first so the seed matters
        groups = df[group].to_numpy()
        order = {g: i for i, g in enumerate(np.random.default_rng(seed).permutation(pd.unique(groups)))}
        splits = GroupKFold(n).split(df, groups=[order[g] for g in groups])
    else:
        splits = StratifiedGroupKFold(n, shuffle=True, random_state=seed).split(df, strata(comp, df, n), df[group])
    fold = np.full(len(df), -1)
    for k, (_, valid) in enumerate(splits):
        fold[valid] = k
    return pd.DataFrame({comp.id_column: df[comp.id_column].values, "fold": fold})


def create_folds(comp: Competition, n: int = 5, scheme: str = "stratified", seed: int = 42, group: str = "",
                 force: bool = False) -> tuple[Path, pd.DataFrame, bool]:
    """Make and write folds.csv; (path, folds, written). An identical existing file is left as it is."""
    train = comp.read_train()
    if train[comp.id_column].duplicated().any():
        dup = train[comp.id_column][train[comp.id_column].duplicated()].iloc[0]
        raise CompetitionError(f"{comp.path(comp.train_csv)}: id {dup!r} appears more than once")
    folds, path = make_folds(comp, train, n, scheme, seed, group), folds_path(comp)
    if path.exists() and not force:
        old = read_table(path)
        if list(old.columns) == list(folds.columns) and old.astype(str).equals(folds.astype(str)):
            return path, folds, False
    return write_folds(folds, path, force), folds, True


def write_folds(folds: pd.DataFrame, path: Path, force: bool = False) -> Path:
    """Write folds.csv; an existing file is kept unless force."""
    if path.exists() and not force:
        raise CompetitionError(f"{path} exists; pass --force to overwrite it (runs record its hash)")
    tmp = path.with_suffix(".tmp")
    folds.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def load_folds(comp: Competition, train: pd.DataFrame, n: int = 5, seed: int = 42,
               scheme: str = "stratified") -> pd.DataFrame:
    """Read folds.csv, creating it first (make_folds, the task's scheme) when the competition has none."""
    path = folds_path(comp)
    if not path.exists():
        write_folds(make_folds(comp, train, n, scheme, seed), path)
    folds = read_table(path, need_rows=True)
    check_columns(folds, [comp.id_column, "fold"], path)
    bad = ~folds["fold"].str.strip().str.fullmatch(r"\d+")
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise CompetitionError(f"{path}:{i + 2} column 'fold' = {folds['fold'].iloc[i]!r}: expected a fold number "
                               f"(0, 1, ...); {int(bad.sum())} such row(s)")
    folds["fold"] = folds["fold"].astype(int)
    missing = set(train[comp.id_column]) - set(folds[comp.id_column])
    if missing:
        raise CompetitionError(f"{path}: {len(missing)} train id(s) have no fold, e.g. {sorted(missing)[:3]}")
    return folds


def adversarial_folds(comp: Competition, train: pd.DataFrame, n: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Folds ordered by test-likeness within each class: fold 0 holds each class's most test-like rows.

    With no real shift (AUC < NO_SHIFT_AUC) p(test) is noise, so ordinary stratified folds are returned.
    """
    from .adval import NO_SHIFT_AUC, load_report, run_adval  # lazy: adval trains a classifier
    report = load_report(comp) or run_adval(comp, seed=seed)
    meta = {"scheme": "adversarial", "auc": report["auc"], "valid_aug": report["chosen_aug"],
            "auc_after": report["auc_after"]}
    if report["auc"] < NO_SHIFT_AUC:
        meta.update(scheme="stratified", valid_aug="none", reason=f"AUC {report['auc']:.3f} < {NO_SHIFT_AUC}: no shift")
        return make_folds(comp, train, n, "stratified", seed), meta
    p = pd.read_csv(work_dir(comp) / "adval" / "train_p_test.csv", dtype={comp.id_column: str})
    df = train[[comp.id_column, comp.target]].merge(p, on=comp.id_column, how="left")
    if df.p_test.isna().any():
        raise ValueError(f"{work_dir(comp)}/adval/train_p_test.csv is stale: re-run `kit adval {comp.root}`")
    fold = np.empty(len(df), int)
    for _, rows in df.groupby(comp.target):
        order = rows.sort_values("p_test", ascending=False, kind="stable").index.to_numpy()
        fold[order] = np.arange(len(order)) * n // len(order)  # contiguous, sizes within 1 of ideal
    return pd.DataFrame({comp.id_column: df[comp.id_column].values, "fold": fold}), meta


def select_folds(folds: pd.DataFrame, fold) -> list[int]:
    """The folds a `--fold` setting asks for: one integer, or every fold in folds.csv for 'all'."""
    from .config import ConfigError
    known = sorted(folds.fold.unique().tolist())
    if fold == "all":
        return known
    try:
        k = int(fold)
    except ValueError:
        raise ConfigError(f"--fold={fold!r}: expected an integer or 'all'") from None
    if k not in known:
        raise ConfigError(f"--fold={k}: folds.csv has folds {known}")
    return [k]


def limit_rows(df: pd.DataFrame, target: str, limit: int) -> pd.DataFrame:
    """About `limit` rows, the same number from every class (quick smoke runs)."""
    per_class = max(2, limit // df[target].nunique())
    return df.groupby(target, group_keys=False).head(per_class).reset_index(drop=True)
