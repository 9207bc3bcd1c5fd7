"""Ensembles: soft = the plain average, weighted >= its best member on the OOF, hard/rank on hand examples."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.competition import Competition, load_competition
from kit.ensemble import blend, ensemble_runs
from kit.metrics import macro_f1
from kit.tables import score_oof, write_probs
from tests.helpers import kit

THREE = Competition(root=".", name="t", classes=["a", "b", "c"])


def _fake_run(runs, name, comp, skill, seed):
    """A finished run: OOF and test tables whose probabilities lean to the true class by `skill`."""
    rng = np.random.default_rng(seed)
    train, test = comp.read_train(), comp.read_test()
    y = train[comp.target].map({c: i for i, c in enumerate(comp.classes)}).to_numpy()
    oof = rng.dirichlet(np.ones(10), len(y)) + skill * np.eye(10)[y]
    run = runs / name
    (run / "fold0").mkdir(parents=True)
    order = rng.permutation(len(y))  # members list rows in different orders: ensembles align by id
    write_probs(run / "oof.parquet", train.id[order].tolist(), oof[order] / oof[order].sum(1, keepdims=True), comp)
    write_probs(run / "test.parquet", test.id.tolist(), rng.dirichlet(np.ones(10), len(test)), comp)
    (run / "lineage.json").write_text(json.dumps({"competition": str(comp.root), "folds_hash": "f"}))
    return run


@pytest.fixture
def two_runs(demo_copy, tmp_path):
    comp = load_competition(demo_copy)
    runs = tmp_path / "runs"
    return comp, runs, [_fake_run(runs, "a", comp, 0.30, 1), _fake_run(runs, "b", comp, 0.15, 2)]


def _table(path, comp, by):
    return pd.read_parquet(path).set_index(comp.id_column).loc[by, comp.classes].to_numpy()


def test_soft_equals_the_manual_average_and_submits(two_runs, tmp_path):
    comp, runs, (a, b) = two_runs
    r = kit("ensemble", "a", "b", "--method=soft", "--name=ens", f"--runs={runs}", cwd=tmp_path)
    assert "ens (soft)" in r.stdout
    ens = runs / "ens"
    for table in ("oof.parquet", "test.parquet"):
        ids = pd.read_parquet(ens / table).id
        assert ids.is_unique
        manual = (_table(a / table, comp, ids) + _table(b / table, comp, ids)) / 2
        np.testing.assert_allclose(_table(ens / table, comp, ids), manual, atol=1e-6)
    cv = json.loads((ens / "cv.json").read_text())
    assert cv["cv"] == pytest.approx(score_oof(comp, comp.read_train(), pd.read_parquet(ens / "oof.parquet"))["score"])
    assert (ens / "confusion.png").stat().st_size > 0
    r = kit("submit", "ens", "-m", "soft blend", f"--runs={runs}", f"--out={tmp_path / 'subs'}", cwd=tmp_path)
    assert "public macro_f1:" in r.stdout and f"CV macro_f1: {cv['cv']:.4f}" in r.stdout


def test_weighted_is_at_least_the_best_member_on_its_oof(two_runs):
    comp, runs, (a, b) = two_runs
    info = ensemble_runs(["a", "b"], "weighted", "w", runs)
    w = np.array(list(info["weights"].values()))
    assert (w >= 0).all() and w.sum() == pytest.approx(1)
    train = comp.read_train()
    members = {n: score_oof(comp, train, pd.read_parquet(runs / n / "oof.parquet"))["score"] for n in ("a", "b")}
    assert info["members_cv"] == pytest.approx(members)
    assert info["cv"] >= max(members.values())
    oof = pd.read_parquet(runs / "w" / "oof.parquet")
    blended = w[0] * _table(a / "oof.parquet", comp, oof.id) + w[1] * _table(b / "oof.parquet", comp, oof.id)
    y = train.set_index("id").label.loc[oof.id].astype(int).to_numpy()
    assert info["cv"] == pytest.approx(macro_f1(y, blended))


def test_hard_vote_on_a_hand_example():
    stack = np.array([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.40, 0.35, 0.25]],
                      [[0.1, 0.5, 0.4], [0.1, 0.8, 0.1], [0.30, 0.31, 0.39]],
                      [[0.5, 0.4, 0.1], [0.5, 0.2, 0.3], [0.20, 0.41, 0.39]]])  # 3 members x 3 rows x 3 classes
    out = blend(stack, "hard", THREE)
    # row 0: votes a, b, a -> a; row 1: b, b, a -> b
    # row 2: a, c, b is a three-way tie -> the soft mean decides: b (0.3567) over c (0.3433) and a (0.30)
    assert out.argmax(1).tolist() == [0, 1, 1]
    np.testing.assert_allclose(out.sum(1), 1)
    np.testing.assert_allclose(out[0], (np.array([2, 1, 0]) + stack[:, 0].mean(0)) / 4)
    # the soft vote disagrees on row 0 of a variant where one member is very sure: hard voting ignores confidence
    sure = stack.copy()
    sure[1, 0] = [0.0, 1.0, 0.0]
    sure[2, 0] = [0.45, 0.55, 0.0]
    assert blend(sure, "soft", THREE)[0].argmax() == 1 and blend(sure, "hard", THREE)[0].argmax() == 1
    sure[2, 0] = [0.55, 0.45, 0.0]
    assert blend(sure, "soft", THREE)[0].argmax() == 1 and blend(sure, "hard", THREE)[0].argmax() == 0


def test_rank_average_on_a_hand_example():
    # member 1 is confident and member 2 timid: ranks weigh them alike where probabilities would not
    m1 = [[0.90, 0.10], [0.80, 0.20], [0.10, 0.90], [0.55, 0.45]]
    m2 = [[0.52, 0.48], [0.49, 0.51], [0.50, 0.50], [0.51, 0.49]]
    out = blend(np.array([m1, m2]), "rank", Competition(root=".", name="t", classes=["x", "y"]))
    # column x ranks (1..4)/4: m1 [4, 3, 1, 2], m2 [4, 1, 2, 3]; column y: m1 [1, 2, 4, 3], m2 [1, 4, 3, 2]
    x = (np.array([4, 3, 1, 2]) + np.array([4, 1, 2, 3])) / 8
    y = (np.array([1, 2, 4, 3]) + np.array([1, 4, 3, 2])) / 8
    np.testing.assert_allclose(out, np.stack([x, y], 1) / (x + y)[:, None])
    assert out.argmax(1).tolist() == [0, 1, 1, 0]  # row 3: x and y tie at 5/8 -> x, the first column


def test_bad_members_are_named(two_runs):
    comp, runs, (a, b) = two_runs
    oof = pd.read_parquet(b / "oof.parquet").iloc[:-3]
    oof.to_parquet(b / "oof.parquet", index=False)
    with pytest.raises(ValueError, match=r"b/oof.parquet: ids differ .*3 missing"):
        ensemble_runs(["a", "b"], "soft", "e", runs)
    with pytest.raises(ValueError, match="must all differ"):
        ensemble_runs(["a", "b"], "soft", "a", runs)
    (runs / "trained" / "fold0").mkdir(parents=True)
    with pytest.raises(ValueError, match="trained run"):
        ensemble_runs(["a", "b"], "soft", "trained", runs)
    with pytest.raises(ValueError, match="method"):
        ensemble_runs(["a", "b"], "median", "e", runs)
