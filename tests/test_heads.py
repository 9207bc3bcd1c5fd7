"""Multi-head: per-head softmax and metrics, the composite label, and exp003 end to end."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from kit.competition import CompetitionError, load_competition
from kit.heads import composite_index, composite_probs, encode_targets, head_metrics, output_probs
from tests.helpers import ROOT, kit, launch


@pytest.fixture(scope="module")
def multihead_dir(tmp_path_factory):
    from kit.demo import make_demo
    return make_demo(tmp_path_factory.mktemp("mh") / "demo_multihead", task="multihead")


def test_demo_heads_multiply_to_the_digit(multihead_dir):
    comp = load_competition(multihead_dir)
    assert comp.task == "multihead" and list(comp.heads) == ["digit_pair", "parity"]
    train = pd.read_csv(multihead_dir / "train.csv", dtype=str)
    y = composite_index(comp, encode_targets(comp, train))
    digits = [int(comp.classes[i]) for i in y]
    assert digits == train.label.astype(int).tolist()
    pairs = [int(p.split("-")[0]) for p in train.digit_pair]
    assert digits == [p + (par == "odd") for p, par in zip(pairs, train.parity)]


def test_composite_probs_are_products_in_head_order(multihead_dir):
    comp = load_competition(multihead_dir)
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(5), 4), rng.dirichlet(np.ones(2), 4)
    joint = composite_probs(comp, np.concatenate([a, b], 1))
    want = np.array([[a[n, i] * b[n, j] for i, j in itertools.product(range(5), range(2))] for n in range(4)])
    np.testing.assert_allclose(joint, want)
    np.testing.assert_allclose(joint.sum(1), 1)
    probs = output_probs(comp, torch.randn(4, 7))
    torch.testing.assert_close(probs[:, :5].sum(1), torch.ones(4))
    torch.testing.assert_close(probs[:, 5:].sum(1), torch.ones(4))


def test_head_metrics_are_sklearn_f1_per_head_and_on_the_composite(multihead_dir):
    comp = load_competition(multihead_dir)
    rng = np.random.default_rng(1)
    targets = np.stack([rng.integers(0, 5, 50), rng.integers(0, 2, 50)], 1)
    probs = np.concatenate([rng.dirichlet(np.ones(5), 50), rng.dirichlet(np.ones(2), 50)], 1)
    m = head_metrics(comp, probs, targets)
    assert m["parity_score"] == pytest.approx(f1_score(targets[:, 1], probs[:, 5:].argmax(1), average="macro"))
    joint_pred = probs[:, :5].argmax(1) * 2 + probs[:, 5:].argmax(1)  # argmax of a product = product of argmaxes
    assert m["score"] == pytest.approx(f1_score(targets[:, 0] * 2 + targets[:, 1], joint_pred, average="macro",
                                                labels=np.arange(10), zero_division=0))


def test_unknown_head_value_is_named_with_row_and_column(multihead_dir):
    comp = load_competition(multihead_dir)
    rows = pd.DataFrame({"id": ["a", "b"], "label": ["1", "2"], "digit_pair": ["0-1", "2-3"],
                         "parity": ["odd", "seven"]})
    with pytest.raises(CompetitionError, match="train.csv: id 'b' column 'parity' = 'seven'"):
        encode_targets(comp, rows, "train.csv")
    rows.loc[1, "parity"] = "odd"  # 2-3 and odd is 3, not 2
    with pytest.raises(CompetitionError, match="id 'b' column 'label' = '2' disagrees with its heads"):
        encode_targets(comp, rows, "train.csv")
    comp.classes = comp.classes[:9]
    with pytest.raises(CompetitionError, match="needs 10 composite classes"):
        encode_targets(comp, rows)


@pytest.mark.slow
def test_exp003_trains_one_epoch_and_submits_the_composite_label(multihead_dir, tmp_path):
    runs, subs = tmp_path / "runs", tmp_path / "subs"
    launch(ROOT / "experiments" / "exp003_multihead.py", f"--comp={multihead_dir}", f"--out_dir={runs}",
           "--epochs=1", "--limit=100", "--num_workers=0", "--model=test_resnet", "--batch_size=16")
    run_dir = runs / "exp003_multihead"
    row = json.loads((run_dir / "fold0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"valid/digit_pair_score", "valid/parity_score", "valid/score"} <= set(row)
    oof = pd.read_parquet(run_dir / "fold0" / "oof.parquet")
    assert list(oof.columns[1:]) == [f"digit_pair:{c}" for c in ("0-1", "2-3", "4-5", "6-7", "8-9")] + \
        ["parity:even", "parity:odd"]
    r = kit("submit", "exp003_multihead", f"--runs={runs}", f"--out={subs}")
    assert "public macro_f1:" in r.stdout
    [csv] = subs.glob("*.csv")
    sub = pd.read_csv(csv, dtype=str)
    test = pd.read_parquet(run_dir / "test.parquet").set_index("id").loc[sub.id]
    comp = load_competition(multihead_dir)
    want = [comp.classes[i] for i in composite_probs(comp, test.to_numpy()).argmax(1)]
    assert list(sub.columns) == ["id", "label"] and sub.label.tolist() == want
