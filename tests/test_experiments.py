"""The recipe experiments train under `accelerate launch` (exp003 is run in test_heads.py)."""
import json

import pytest

from tests.helpers import ROOT, launch

EXPERIMENTS = ROOT / "experiments"


def test_experiment_files_stay_short():
    for name in ("exp002_focal_cutmix.py", "exp003_multihead.py"):
        assert len((EXPERIMENTS / name).read_text().splitlines()) <= 60, name


@pytest.mark.slow
def test_exp002_focal_cutmix_trains_with_ema_and_balanced_sampling(demo_copy, tmp_path):
    runs = tmp_path / "runs"
    launch(EXPERIMENTS / "exp002_focal_cutmix.py", f"--comp={demo_copy}", f"--out_dir={runs}", "--epochs=1",
           "--limit=120", "--num_workers=0", "--model=test_resnet", "--batch_size=16", "--predict_test=false")
    fold = runs / "exp002_focal_cutmix" / "fold0"
    rows = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and all(r["train_loss"] > 0 for r in rows)
    config = (runs / "exp002_focal_cutmix" / "config.yaml").read_text()
    for line in ("loss: focal", "cutmix: 1.0", "sampler: sqrt", "ema_decay: 0.99", "aug: testlike"):
        assert line in config
    assert (fold / "best.safetensors").exists() and (fold / "oof.parquet").exists()
