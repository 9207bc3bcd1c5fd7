"""End to end, as a user runs it: accelerate launch an experiment, then submit."""
import json

import numpy as np
import pandas as pd
import pytest

from kit.competition import load_competition
from kit.metrics import macro_f1
from tests.helpers import ROOT, kit, launch

BASELINE = ROOT / "experiments" / "exp001_baseline.py"


@pytest.mark.slow
def test_baseline_one_epoch_then_submission_matches_sample(demo_copy, tmp_path):
    runs, subs = tmp_path / "runs", tmp_path / "submissions"
    launch(BASELINE, f"--comp={demo_copy}", f"--out_dir={runs}", "--epochs=1", "--limit=120", "--num_workers=0")
    run_dir = runs / "exp001_baseline"
    for name in ("config.yaml", "lineage.json", "experiment.py", "test.parquet", "fold0/best.safetensors",
                 "fold0/oof.parquet", "fold0/metrics.jsonl"):
        assert (run_dir / name).exists(), name
    r = kit("submit", "exp001_baseline", "-m", "smoke", f"--runs={runs}", f"--out={subs}")
    assert "public macro_f1:" in r.stdout
    [csv] = subs.glob("*_exp001_baseline.csv")
    sub = pd.read_csv(csv, dtype=str)
    sample = pd.read_csv(demo_copy / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns)
    assert sub.id.tolist() == sample.id.tolist()
    assert set(sub.label) <= {str(c) for c in range(10)}


@pytest.mark.slow
def test_ddp_two_processes_scores_exactly_the_validation_set(demo_copy, tmp_path):
    runs = tmp_path / "runs"
    launch(BASELINE, f"--comp={demo_copy}", f"--out_dir={runs}", "--epochs=1", "--batch_size=16",
           "--num_workers=0", "--model=test_resnet", processes=2)
    comp = load_competition(demo_copy)
    folds = pd.read_csv(demo_copy / "folds.csv", dtype=str)
    valid_ids = folds.id[folds.fold == "0"]
    assert len(valid_ids) % 32 != 0  # a size that forces the sampler to pad under 2 processes
    oof = pd.read_parquet(runs / "exp001_baseline" / "fold0" / "oof.parquet")
    assert len(oof) == len(valid_ids) and set(oof.id) == set(valid_ids)  # none padded, none missing
    row = json.loads((runs / "exp001_baseline" / "fold0" / "metrics.jsonl").read_text().splitlines()[-1])
    labels = pd.read_csv(demo_copy / "train.csv", dtype=str).set_index("id").label
    y = labels.loc[oof.id].astype(int).to_numpy()
    assert row["valid/score"] == pytest.approx(macro_f1(y, oof[comp.classes].to_numpy()), abs=1e-6)
    lineage = json.loads((runs / "exp001_baseline" / "lineage.json").read_text())
    assert lineage["num_processes"] == 2
    test = pd.read_parquet(runs / "exp001_baseline" / "test.parquet")
    assert len(test) == 1242 and np.allclose(test[comp.classes].sum(1), 1, atol=1e-4)
