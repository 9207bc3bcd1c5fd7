"""Folds: disjoint, stratified within one row of ideal, groups kept whole, never overwritten silently."""
import numpy as np
import pandas as pd
import pytest

from kit.competition import Competition, CompetitionError, load_competition
from kit.folds import create_folds, make_folds
from tests.helpers import kit


def _comp(**kw) -> Competition:
    return Competition(root=".", name="t", classes=[str(c) for c in range(4)], **kw)


def _table(n=203, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.choice(4, n, p=[0.5, 0.3, 0.15, 0.05]).astype(str)  # imbalanced, one rare class
    return pd.DataFrame({"id": [f"i{k:04d}" for k in range(n)], "label": labels,
                         "patient": [f"p{k}" for k in rng.integers(0, 40, n)]})


def _assert_partition(df, folds, n):
    assert folds.id.tolist() == df.id.tolist()  # every id once, in train order
    assert set(folds.fold) == set(range(n))


@pytest.mark.parametrize("n", [3, 5])
def test_stratified_class_counts_within_one_of_ideal(n):
    df = _table()
    folds = make_folds(_comp(), df, n, "stratified", seed=1)
    _assert_partition(df, folds, n)
    counts = pd.crosstab(folds.fold, df.label)
    ideal = df.label.value_counts() / n
    assert (counts.sub(ideal, axis=1).abs() < 1).all().all()  # floor or ceiling of the ideal share


@pytest.mark.parametrize("scheme", ["group", "stratified_group"])
def test_group_schemes_never_split_a_group(scheme):
    df = _table()
    folds = make_folds(_comp(), df, 5, scheme, seed=3, group="patient")
    _assert_partition(df, folds, 5)
    assert (folds.groupby(df.patient).fold.nunique() == 1).all()
    with pytest.raises(CompetitionError, match="--group"):
        make_folds(_comp(), df, 5, scheme)
    with pytest.raises(CompetitionError, match="no group column 'site'"):
        make_folds(_comp(), df, 5, scheme, group="site")


def test_multilabel_folds_balance_every_label():
    rng = np.random.default_rng(0)
    y = rng.random((300, 4)) < [0.5, 0.3, 0.1, 0.05]
    df = pd.DataFrame({"id": [str(i) for i in range(300)],
                       "labels": [" ".join(str(c) for c in np.flatnonzero(r)) for r in y]})
    comp = _comp(task="multilabel", target_columns=["labels"])
    folds = make_folds(comp, df, 5, "multilabel", seed=0)
    _assert_partition(df, folds, 5)
    per_fold = pd.DataFrame(y.astype(int)).groupby(folds.fold.to_numpy()).sum()
    assert (per_fold.sub(y.sum(0) / 5, axis=1).abs() <= 1.5).all().all()  # iterative stratification
    bad = df.assign(labels=df.labels.where(df.index != 7, "0 9"))
    with pytest.raises(CompetitionError, match="row 9.*'9'"):
        make_folds(comp, bad, 5, "multilabel")


def test_kit_folds_refuses_to_overwrite_without_force(demo_copy):
    path = demo_copy / "folds.csv"
    r = kit("folds", str(demo_copy), "--n=3")
    assert "written" in r.stdout and path.exists()
    first = path.read_bytes()
    assert "unchanged" in kit("folds", str(demo_copy), "--n=3").stdout  # the same folds again: nothing to do
    r = kit("folds", str(demo_copy), "--n=4", check=False)
    assert r.returncode != 0 and "--force" in r.stderr and path.read_bytes() == first
    kit("folds", str(demo_copy), "--n=4", "--force")
    folds = pd.read_csv(path, dtype=str)
    assert sorted(folds.fold.unique()) == ["0", "1", "2", "3"]
    train = load_competition(demo_copy).read_train()
    assert sorted(folds.id) == sorted(train.id)
    with pytest.raises(CompetitionError, match="scheme"):
        create_folds(load_competition(demo_copy), scheme="random", force=True)



@pytest.mark.parametrize("task", ["multihead", "multilabel", "segmentation"])
def test_folds_made_by_training_equal_kit_folds(tmp_path, task):
    """Several targets (heads, label sets, mask classes): the folds a first run makes are exactly `kit folds`' own."""
    from kit.cli import folds as kit_folds
    from kit.config import Config
    from kit.demo import make_demo
    from kit.segmentation import SegConfig, SegTrainer
    from kit.trainer import Trainer
    comp = make_demo(tmp_path / "c", task=task)
    trainer_cls, cfg = (SegTrainer, SegConfig) if task == "segmentation" else (Trainer, Config)
    trainer_cls(cfg(comp=str(comp), out_dir=str(tmp_path / "runs"), predict_test=False))
    made = pd.read_csv(comp / "folds.csv", dtype=str)
    (comp / "folds.csv").unlink()
    kit_folds(str(comp))
    assert made.equals(pd.read_csv(comp / "folds.csv", dtype=str))
