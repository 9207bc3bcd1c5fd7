"""Multilabel end to end: sigmoid outputs, 0/1 targets, tuned thresholds, space-separated submissions."""
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from kit.competition import CompetitionError, load_competition
from kit.leaderboard import score_submission
from kit.tasks import task_of
from kit.validate import validate_submission
from tests.helpers import ROOT, kit, launch


@pytest.fixture(scope="module")
def ml_demo(tmp_path_factory):
    from kit.demo import make_demo
    return make_demo(tmp_path_factory.mktemp("ml") / "demo_multilabel", task="multilabel")


def test_demo_labels_are_the_digits_properties(ml_demo):
    comp = load_competition(ml_demo)
    assert comp.task == "multilabel" and comp.classes == ["even", "big", "prime", "loop"]
    train = comp.read_train()
    y = task_of(comp).encode_targets(train)
    assert y.dtype == np.float32 and y.shape == (len(train), 4)
    six = train.label == "even big loop"  # a 6 or an 8
    assert six.any() and (y[six.to_numpy()] == [1, 1, 0, 1]).all()
    assert (train.label == "").any()  # a 1 has no property: an empty cell is a valid label


def test_sigmoid_outputs_and_an_unknown_label_named_with_its_row(ml_demo):
    comp = load_competition(ml_demo)
    task = task_of(comp)
    logits = torch.randn(5, 4)
    torch.testing.assert_close(task.output_probs(logits), torch.sigmoid(logits))
    rows = pd.DataFrame({"id": ["a", "b"], "label": ["even", "even square"]})
    with pytest.raises(CompetitionError, match="row 3, column label: label 'square'"):
        task.encode_targets(rows)


def test_thresholds_maximise_each_class_f1_and_shape_the_submission(ml_demo):
    comp = load_competition(ml_demo)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (200, 4))
    probs = np.clip(y * 0.3 + rng.random((200, 4)) * 0.6, 0, 1)  # positives sit higher, not above 0.5
    task = task_of(comp)
    tuned = task.tune(y, probs)
    for k, c in enumerate(comp.classes):
        best = max(f1_score(y[:, k], probs[:, k] >= t) for t in np.arange(0.05, 0.96, 0.05))
        assert f1_score(y[:, k], probs[:, k] >= tuned["thresholds"][c]) == pytest.approx(best)
    assert tuned["cv_tuned"] > f1_score(y, probs >= 0.5, average="micro")
    again = task_of(comp, {"thresholds": tuned["thresholds"]})  # what `kit submit` reads from cv.json
    labels = again.submission_labels(np.array([[0.99, 0.0, 0.0, 0.99], [0.0, 0.0, 0.0, 0.0]]))
    assert labels == ["even loop", ""]


def test_the_true_labels_score_one_on_the_local_leaderboard(ml_demo, tmp_path):
    comp = load_competition(ml_demo)
    solution = pd.read_csv(ml_demo / "leaderboard" / "solution.csv", dtype=str, keep_default_na=False)
    solution[["id", "label"]].to_csv(tmp_path / "truth.csv", index=False)
    assert validate_submission(comp, tmp_path / "truth.csv") == []
    assert score_submission(comp, tmp_path / "truth.csv") == {"public": 1.0, "private": 1.0}


@pytest.mark.slow
def test_exp005_trains_every_fold_then_submits_space_separated_labels(ml_demo, tmp_path):
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    launch(ROOT / "experiments" / "exp005_multilabel.py", f"--comp={ml_demo}", f"--out_dir={runs}", "--fold=all",
           "--n_folds=2", "--epochs=1", "--limit=120", "--num_workers=0", "--model=test_resnet")
    cv = json.loads((runs / "exp005_multilabel" / "cv.json").read_text())
    assert cv["metric"] == "f1_micro" and set(cv["thresholds"]) == {"even", "big", "prime", "loop"}
    oof = pd.read_parquet(runs / "exp005_multilabel" / "oof.parquet")
    assert list(oof.columns) == ["id", "even", "big", "prime", "loop"] and oof.iloc[:, 1:].max().max() <= 1
    r = kit("submit", "exp005_multilabel", "-m", "multilabel", f"--runs={runs}", f"--out={subs}")
    assert "public f1_micro:" in r.stdout
    [csv] = subs.glob("*_exp005_multilabel.csv")
    sub = pd.read_csv(csv, dtype=str, keep_default_na=False)
    assert {t for cell in sub.label for t in cell.split()} <= {"even", "big", "prime", "loop"}
    assert sub.id.tolist() == pd.read_csv(ml_demo / "sample_submission.csv", dtype=str).id.tolist()


def test_hard_and_rank_ensembles_treat_each_label_as_its_own_vote(ml_demo):
    from scipy.stats import rankdata
    from kit.ensemble import blend
    comp = load_competition(ml_demo)
    rng = np.random.default_rng(1)
    stack = rng.random((3, 50, 4))
    hard = blend(stack, "hard", comp)
    for r, k in [(0, 0), (7, 2), (49, 3)]:  # hand-written: majority of p >= 0.5, the mean breaks ties
        votes = sum(stack[m, r, k] >= 0.5 for m in range(3))
        assert hard[r, k] == pytest.approx((votes + stack[:, r, k].mean()) / 4)
        assert (hard[r, k] > 0.5) == (votes >= 2)
    rank = blend(stack, "rank", comp)
    expected = np.mean([rankdata(stack[m][:, 2]) / 50 for m in range(3)], axis=0)
    np.testing.assert_allclose(rank[:, 2], expected)  # per column over rows, not renormalised across labels
