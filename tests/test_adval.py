"""Adversarial validation: the shift is measured, a test-like view lowers it, and no shift is left alone."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kit.adval import NO_SHIFT_AUC, run_adval, shift_auc
from kit.competition import load_competition
from kit.folds import adversarial_folds, make_stratified
from tests.helpers import ROOT, kit, launch


def test_shift_auc_matches_separability():
    rng = np.random.default_rng(0)
    same = shift_auc(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)))[0]
    apart = shift_auc(rng.normal(size=(300, 5)), rng.normal(1.5, 1, size=(300, 5)))[0]
    assert abs(same - 0.5) < 0.08 and apart > 0.9


@pytest.fixture
def no_shift_comp(demo_copy):
    """The demo's clean train images split in two: 'test' is drawn exactly like train."""
    train = pd.read_csv(demo_copy / "train.csv", dtype=str)
    rng = np.random.default_rng(1)
    is_test = rng.random(len(train)) < 0.5
    for image_id in train.id[is_test]:
        shutil.move(demo_copy / "train" / f"{image_id}.png", demo_copy / "test" / f"{image_id}.png")
    train[~is_test].to_csv(demo_copy / "train.csv", index=False)
    pd.DataFrame({"id": train.id[is_test], "label": "0"}).to_csv(demo_copy / "sample_submission.csv", index=False)
    return demo_copy


def test_demo_shift_is_found_and_the_test_like_view_lowers_it(demo_copy):
    r = kit("adval", f"--comp={demo_copy}")
    report = json.loads((demo_copy / "adval" / "adval.json").read_text())
    assert report["auc"] > 0.95, report
    assert report["chosen_aug"] != "none" and report["auc_after"] < report["auc"] - 0.1, report
    assert f"AUC fell by {report['auc_drop']:.3f}" in r.stdout
    assert {s["stat"] for s in report["top_stats"][:3]} & {"saturation", "colour_cast", "contrast", "noise"}
    for png in ("train_most_testlike.png", "test_least_trainlike.png"):
        assert (demo_copy / "adval" / png).stat().st_size > 1000
    comp = load_competition(demo_copy)
    train = comp.read_train()
    folds, meta = adversarial_folds(comp, train, 5, 0)
    assert meta["scheme"] == "adversarial" and meta["valid_aug"] == report["chosen_aug"]
    kit("folds", str(demo_copy), "--scheme=adversarial", "--n=5", "--seed=0")  # the CLI writes the same folds
    written = pd.read_csv(demo_copy / "folds.csv", dtype={"id": str}).set_index("id").fold.sort_index()
    assert written.astype(int).equals(folds.set_index("id").fold.astype(int).sort_index())
    assert folds.id.is_unique and set(folds.id) == set(train.id)
    merged = train.merge(folds, on="id")
    counts = merged.groupby(["label", "fold"]).size().unstack()
    ideal = merged.label.value_counts() / 5
    assert (counts.sub(ideal, axis=0).abs() <= 1).all().all()
    p = pd.read_csv(demo_copy / "adval" / "train_p_test.csv", dtype=str).astype({"p_test": float})
    mean_p = merged.merge(p, on="id").groupby("fold").p_test.mean()
    assert mean_p.iloc[0] == mean_p.max()  # fold 0 holds the most test-like rows


def test_no_shift_gives_auc_near_half_and_plain_stratified_folds(no_shift_comp):
    comp = load_competition(no_shift_comp)
    report = run_adval(comp, augs=("none", "testlike"))
    assert report["auc"] < NO_SHIFT_AUC, report
    train = comp.read_train()
    folds, meta = adversarial_folds(comp, train, 5, 42)
    assert meta["scheme"] == "stratified" and meta["valid_aug"] == "none"
    pd.testing.assert_frame_equal(folds, make_stratified(train, "id", "label", 5, 42))


@pytest.mark.slow
def test_test_like_validation_predicts_the_public_score(demo_copy, tmp_path):
    exp = ROOT / "experiments" / "exp001_baseline.py"
    gaps = {}
    for view in ("none", "testlike"):
        name = f"view_{view}"
        launch(exp, f"--comp={demo_copy}", f"--out_dir={tmp_path}", f"--name={name}", "--epochs=4",
               "--num_workers=0", f"--valid_aug={view}")
        rows = (tmp_path / name / "fold0" / "metrics.jsonl").read_text().splitlines()
        best = max(json.loads(line)["valid/score"] for line in rows)
        r = kit("submit", name, f"--runs={tmp_path}", f"--out={tmp_path / 'subs'}")
        public = float(r.stdout.split("public macro_f1:")[1].split()[0])
        gaps[view] = (best, public, abs(best - public))
    print(f"|CV - public|: plain {gaps['none']}, test-like {gaps['testlike']}")
    assert gaps["testlike"][2] < gaps["none"][2] - 0.2, gaps
