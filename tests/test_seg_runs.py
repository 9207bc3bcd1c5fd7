"""Segmentation runs as classification runs are: tracked, summary.json, under `kit sweep` and DDP, exactly resumable."""
import json
import os
import shutil
import subprocess

import numpy as np
import optuna
import pytest
import yaml

from kit.config import load_config
from tests.helpers import BIN, ROOT, launch
from tests.test_resume import _assert_same, _final, _run
from tests.wandb_records import read_history_when

EXP = ROOT / "experiments" / "exp_seg001_unet.py"
TINY = ["--encoder=tu-test_resnet", "--limit=80", "--img_size=32", "--batch_size=8", "--num_workers=0",
        "--predict_test=false"]


@pytest.fixture(scope="module")
def seg_demo(tmp_path_factory):
    from kit.demo import make_demo
    return make_demo(tmp_path_factory.mktemp("segruns") / "demo_seg", task="segmentation")


@pytest.fixture
def seg_comp(seg_demo, tmp_path):
    """A private copy of the segmentation demo (its own folds.csv)."""
    return shutil.copytree(seg_demo, tmp_path / "demo_seg", ignore=shutil.ignore_patterns(".kit_cache", "folds.csv"))


@pytest.mark.slow
def test_ddp_segmentation_run_logs_to_wandb_and_writes_its_summary(seg_comp, tmp_path):
    runs = tmp_path / "runs"
    launch(EXP, f"--comp={seg_comp}", f"--out_dir={runs}", *TINY, "--epochs=1", "--n_folds=2", "--fold=all",
           "--log_with=wandb", processes=2)
    run = runs / "exp_seg001_unet"
    cv = json.loads((run / "cv.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert cv["folds_done"] == [0, 1] and summary["cv/score"] == pytest.approx(cv["cv"])
    last = json.loads((run / "fold1" / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["valid/dice"] == pytest.approx(last["valid/dice"])  # the last epoch logged, as sweeps read it
    [wandb_file] = run.glob("wandb/offline-run-*/run-*.wandb")  # one run: only the main process logs
    history = read_history_when(wandb_file, "cv/score")
    assert [r["cv/score"] for r in history if "cv/score" in r] == [pytest.approx(cv["cv"])]
    assert [(r["fold"], r["epoch"]) for r in history if "valid/dice" in r] == [(0, 0), (1, 0)]


SEG_EXPERIMENT = '''
from kit.segmentation import SegConfig, SegTrainer
from kit import run


class Exp(SegTrainer):
    config = SegConfig(comp="{comp}", encoder="tu-test_resnet", img_size=32, batch_size=8, epochs=1, limit=60,
                       num_workers=0, predict_test=False, warmup_epochs=0, log_with="wandb")


if __name__ == "__main__":
    run(Exp)
'''


@pytest.mark.slow
def test_kit_sweep_runs_a_segmentation_experiment(seg_comp, tmp_path):
    (tmp_path / "exp_seg.py").write_text(SEG_EXPERIMENT.format(comp=seg_comp))
    (tmp_path / "seg.yaml").write_text(yaml.safe_dump({
        "name": "seg", "program": "exp_seg.py", "method": "random",
        "metric": {"name": "valid/dice", "goal": "maximize"},
        "parameters": {"lr": {"values": [1e-3, 3e-3]}},
        "command": ["${env}", "${interpreter}", "${program}", "${args}"]}))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    r = subprocess.run([str(BIN / "kit"), "sweep", "seg.yaml", "--trials=1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = optuna.load_study(study_name="seg", storage=f"sqlite:///{tmp_path / 'runs' / 'sweeps' / 'seg.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE], r.stdout[-3000:]
    for t in study.trials:
        run = tmp_path / "runs" / f"seg-t{t.number:03d}"
        last = json.loads((run / "fold0" / "metrics.jsonl").read_text().splitlines()[-1])
        assert t.value == pytest.approx(last["valid/dice"])  # read from the trial's summary.json
        assert load_config(run / "config.yaml").lr == t.params["lr"]
        assert list(run.glob("wandb/offline-run-*/run-*.wandb"))  # each trial tracked


# 60 rows, 5 folds -> 48 train rows = 6 batches of 8 per epoch; Affine/noise/dropout augment image and mask together
RESUME = ["--encoder=tu-test_resnet", "--img_size=32", "--batch_size=8", "--num_workers=0", "--predict_test=false",
          "--epochs=2", "--limit=60", "--ckpt_every=2", "--aug=medium", "--tta=none",
          "--keep_fold_ckpts=true"]  # the final checkpoints are compared: the finished fold keeps them


@pytest.mark.slow
def test_segmentation_run_killed_mid_epoch_resumes_bitwise_equal(seg_comp, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _run(seg_comp, whole, exp=EXP, base=RESUME)
    _run(seg_comp, resumed, fault="step:3", exp=EXP, base=RESUME)  # after the checkpoint at step 2, mid-epoch
    r = _run(seg_comp, resumed, exp=EXP, base=RESUME)
    assert "resumed from" in r.stdout + r.stderr
    _assert_same(_final(resumed, "exp_seg001_unet"), _final(whole, "exp_seg001_unet"), "segmentation killed at step 3")
    oof = [np.load(p / "exp_seg001_unet" / "fold0" / "oof_masks.npz")["probs"] for p in (whole, resumed)]
    assert np.array_equal(*oof)  # the fold's OOF mask table, bitwise
