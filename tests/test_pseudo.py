"""Pseudo-labelling: confident rows chosen as asked, never validated on, soft/hard losses, rounds end to end."""
import importlib.util
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from timm.loss import SoftTargetCrossEntropy

from kit.competition import CompetitionError, load_competition
from kit.ledger import Ledger
from kit.pseudo import make_pseudo_table, select_rows
from tests.helpers import ROOT, kit, launch

BASELINE = ROOT / "experiments" / "exp001_baseline.py"


def _load_exp():
    spec = importlib.util.spec_from_file_location("exp001_for_tests", BASELINE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.Exp


def test_select_rows_by_threshold_and_per_class_top():
    probs = np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7], [0.55, 0.45]])
    assert select_rows(probs, threshold=0.9).tolist() == [True, False, False, True, False, False]
    # top-1 per predicted class: class 0 -> row 0 (0.95), class 1 -> row 3 (0.9)
    assert select_rows(probs, per_class_top=1).tolist() == [True, False, False, True, False, False]
    assert select_rows(probs, per_class_top=2).tolist() == [True, True, True, True, False, False]


def _two_fold_comp(demo_copy):
    train = pd.read_csv(demo_copy / "train.csv", dtype=str)
    pd.DataFrame({"id": train.id, "fold": np.arange(len(train)) % 2}).to_csv(demo_copy / "folds.csv", index=False)
    return load_competition(demo_copy)


def _pseudo_table(comp, ids, soft=False, folds=(0, 1)):
    rng = np.random.default_rng(0)
    rows = []
    for k in folds:
        p = rng.dirichlet(np.ones(10), size=len(ids)).astype(np.float32)
        if not soft:
            p = np.eye(10, dtype=np.float32)[p.argmax(1)]
        rows.append(pd.DataFrame(p, columns=comp.classes).assign(id=ids, fold=k))
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("soft", [False, True])
def test_pseudo_rows_join_training_parts_only_and_pick_the_loss(demo_copy, tmp_path, soft):
    comp = _two_fold_comp(demo_copy)
    test_ids = comp.read_test().id.tolist()[:40]
    path = tmp_path / "pseudo.parquet"
    _pseudo_table(comp, test_ids, soft).to_parquet(path)
    Exp = _load_exp()
    trainer = Exp(Exp.config.override(comp=str(demo_copy), pseudo=str(path), out_dir=str(tmp_path), name="pl",
                                      epochs=1, limit=60, num_workers=0, model="test_resnet", predict_test=False))
    for fold in (0, 1):
        train_ds, valid_ds = trainer.build_datasets(fold)
        assert not set(valid_ds.ids) & set(test_ids), "a pseudo row reached a validation fold"
        assert set(train_ds.ids) & set(test_ids) == set(test_ids)
        assert len(train_ds) == len(trainer.train_df) - len(valid_ds) + len(test_ids)
        assert train_ds.targets.dtype == (torch.float32 if soft else torch.int64)
    trainer.fit(0)
    assert isinstance(trainer.loss_fn, SoftTargetCrossEntropy) == soft
    oof = pd.read_parquet(tmp_path / "pl" / "fold0" / "oof.parquet")
    assert not set(oof.id) & set(test_ids) and set(oof.id) <= set(trainer.train_df.id)


def test_pseudo_table_with_a_train_id_is_refused(demo_copy, tmp_path):
    comp = _two_fold_comp(demo_copy)
    bad = _pseudo_table(comp, [comp.read_train().id[0]])
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)
    Exp = _load_exp()
    trainer = Exp(Exp.config.override(comp=str(demo_copy), pseudo=str(path), out_dir=str(tmp_path), predict_test=False))
    with pytest.raises(CompetitionError, match="are train ids"):
        trainer.build_datasets(0)


def test_fold_pseudo_labels_come_from_that_folds_model(demo_copy, tmp_path):
    comp = _two_fold_comp(demo_copy)
    ids = comp.read_test().id.tolist()[:5]
    for k, winner in ((0, 3), (1, 7)):
        (tmp_path / f"fold{k}").mkdir()
        p = np.full((5, 10), 0.01, np.float32)
        p[:, winner] = 0.91
        pd.DataFrame(p, columns=comp.classes).assign(id=ids).to_parquet(tmp_path / f"fold{k}" / "test.parquet")
    table = make_pseudo_table(tmp_path, comp, [0, 1], 0.9, 0, soft=False)
    got = table.groupby("fold").apply(lambda t: t[comp.classes].to_numpy().argmax(1)[0], include_groups=False)
    assert got.to_dict() == {0: 3, 1: 7}


@pytest.mark.slow
def test_two_rounds_end_to_end(demo_copy, tmp_path):
    _two_fold_comp(demo_copy)
    common = [f"--comp={demo_copy}", f"--out_dir={tmp_path}", "--epochs=1", "--num_workers=0", "--limit=150"]
    launch(BASELINE, *common, "--fold=all", "--name=base")
    args = ["pseudo", "base", "--rounds=2", "--per_class_top=8", f"--runs={tmp_path}", "--patience=2",
            "--args=" + " ".join(common[2:]), "--submit", f"--out={tmp_path / 'subs'}"]
    r = kit(*args)
    for k in (1, 2):
        meta = json.loads((tmp_path / f"base_pl{k}" / "pseudo.json").read_text())
        assert meta["rows"] > 0 and sum(meta["per_class"].values()) == meta["rows"]
        assert meta["labels_from"]["tta"] is False and f"round {k}: labels from base" in r.stdout  # no kit predict
        assert f"round {k}: +{meta['rows']} pseudo rows" in r.stdout and f"CV macro_f1 {meta['cv']:.4f}" in r.stdout
        oof = pd.read_parquet(tmp_path / f"base_pl{k}" / "oof.parquet")
        base_oof = pd.read_parquet(tmp_path / "base" / "oof.parquet")
        assert oof.id.is_unique and set(oof.id) == set(base_oof.id)  # real labels only, as in round 0
    assert json.loads((tmp_path / "base_pl2" / "pseudo.json").read_text())["agreement"] is not None
    # every round is in the ledger with what it trained on, scored on the local leaderboard
    rows = Ledger(tmp_path / "subs" / "ledger.db").rows()
    assert [r["pseudo"]["round"] for r in rows] == [1, 2] and [r["pseudo"]["parent"] for r in rows] == ["base", "base_pl1"]
    assert all(r["pseudo"]["threshold"] == 0.9 and r["pseudo"]["rows"] > 0 and r["public"] is not None for r in rows)
    kit(*args)  # a re-run (as after a crash) finds the rounds done and submitted: nothing is submitted twice
    assert len(Ledger(tmp_path / "subs" / "ledger.db").rows()) == 2


def test_pseudo_refuses_a_multihead_competition(tmp_path):
    from kit.demo import make_demo
    comp = make_demo(tmp_path / "mh", task="multihead")
    run = tmp_path / "runs" / "mh_exp"
    run.mkdir(parents=True)
    (run / "lineage.json").write_text(json.dumps({"experiment_file": str(BASELINE)}))
    (run / "config.yaml").write_text(f"comp: {comp}\n")
    r = kit("pseudo", "mh_exp", f"--runs={tmp_path / 'runs'}", check=False)
    assert r.returncode != 0 and "multihead" in r.stderr and "multiclass competitions only" in r.stderr
