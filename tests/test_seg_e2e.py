"""Segmentation end to end, as a user runs it: demo data, accelerate launch, kit submit, kit validate."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.competition import load_competition
from kit.rle import rle_decode
from kit.seg_submit import build_rle_submission
from kit.tta import VIEWS
from kit.validate import validate_submission
from tests.helpers import ROOT, kit, launch

EXP = ROOT / "experiments" / "exp_seg001_unet.py"


@pytest.fixture
def seg_comp(tmp_path):
    kit("demo-data", "--task=segmentation", f"--out={tmp_path / 'demo_seg'}")
    return tmp_path / "demo_seg"


@pytest.mark.slow
def test_demo_experiment_one_epoch_then_rle_submission_passes_validation(seg_comp, tmp_path):
    runs, subs = tmp_path / "runs", tmp_path / "submissions"
    launch(EXP, f"--comp={seg_comp}", f"--out_dir={runs}", "--epochs=1", "--limit=120", "--num_workers=0",
           "--tta=hflip", "--encoder=tu-test_resnet")  # a tiny timm encoder: the CPU test stays short
    run_dir = runs / "exp_seg001_unet"
    for name in ("config.yaml", "lineage.json", "cv.json", "test_masks.npz", "fold0/best.safetensors",
                 "fold0/oof_masks.npz", "fold0/metrics.jsonl"):
        assert (run_dir / name).exists(), name
    cv = json.loads((run_dir / "cv.json").read_text())
    assert cv["folds_done"] == [0] and len(cv["threshold"]) == 2 and 0 <= cv["per_fold"]["0"] <= 1
    with np.load(run_dir / "test_masks.npz") as z:
        assert z["probs"].shape == (160, 2, 64, 64) and 0 <= z["probs"].min() and z["probs"].max() <= 1
    r = kit("submit", "exp_seg001_unet", "-m", "smoke", f"--runs={runs}", f"--out={subs}")
    assert "public dice:" in r.stdout
    [csv] = subs.glob("*_exp_seg001_unet.csv")
    comp = load_competition(seg_comp)
    assert validate_submission(comp, csv) == []  # `kit submit` checked it too, before writing it
    sub = pd.read_csv(csv, dtype=str, keep_default_na=False)
    sample = pd.read_csv(seg_comp / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert list(sub.columns) == list(sample.columns) and sub.id.tolist() == sample.id.tolist()
    for v in sub.circle.tolist() + sub.rectangle.tolist():
        rle_decode(v, (64, 64))
    # re-predict from the fold weights with more TTA views, then submit again
    with np.load(run_dir / "test_masks.npz") as z:
        before = z["probs"].astype(np.float32)
    kit("predict-seg", "exp_seg001_unet", f"--runs={runs}", "--tta=d4", "--device=cpu")
    assert json.loads((run_dir / "predict.json").read_text()) == {"tta": list(VIEWS), "folds": [0]}
    with np.load(run_dir / "test_masks.npz") as z:
        after = z["probs"].astype(np.float32)
    assert after.shape == before.shape and not np.allclose(after, before)  # 8 views averaged, not 2
    again = tmp_path / "again.csv"
    build_rle_submission(comp, run_dir).to_csv(again, index=False)
    assert validate_submission(comp, again) == []


@pytest.mark.slow
def test_ddp_two_processes_predict_every_validation_mask_once(seg_comp, tmp_path):
    runs = tmp_path / "runs"
    launch(EXP, f"--comp={seg_comp}", f"--out_dir={runs}", "--epochs=1", "--batch_size=7", "--num_workers=0",
           "--encoder=tu-test_resnet", "--predict_test=false", "--arch=FPN", "--seg_loss=lovasz", processes=2)
    folds = pd.read_csv(seg_comp / "folds.csv", dtype=str)
    valid = folds.id[folds.fold == "0"]
    assert len(valid) % 14 != 0  # forces padding under 2 processes
    with np.load(runs / "exp_seg001_unet" / "fold0" / "oof_masks.npz") as z:
        ids, probs = z["ids"].tolist(), z["probs"]
    assert len(ids) == len(valid) and set(ids) == set(valid) and probs.shape == (len(valid), 2, 64, 64)
    row = json.loads((runs / "exp_seg001_unet" / "fold0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= row["valid/dice"] <= 1 and row["valid/iou"] <= row["valid/dice"]


def test_segmentation_experiment_stays_short():
    assert len(EXP.read_text().splitlines()) <= 60
