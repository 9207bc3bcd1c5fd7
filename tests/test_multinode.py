"""Several machines, one run: 2 "machines" x 1 process on localhost against 1 machine x 2 processes."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kit.competition import load_competition
from tests.helpers import ROOT, kit, launch, launch_machines

BASELINE = ROOT / "experiments" / "exp001_baseline.py"
ARGS = ["--epochs=2", "--warmup_epochs=0", "--limit=120", "--num_workers=0", "--model=test_resnet", "--img_size=32",
        "--batch_size=16"]


@pytest.mark.slow
def test_two_machines_write_the_same_tables_as_one_machine_with_two_processes(demo_copy, tmp_path):
    args = [f"--comp={demo_copy}", *ARGS]
    launch(BASELINE, *args, f"--out_dir={tmp_path / 'one'}", processes=2)
    results = launch_machines(BASELINE, *args, f"--out_dir={tmp_path / 'two'}", machines=2)
    for r in results:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    one, two = tmp_path / "one" / "exp001_baseline", tmp_path / "two" / "exp001_baseline"
    comp = load_competition(demo_copy)
    for table in ("fold0/oof.parquet", "fold0/test.parquet", "test.parquet"):
        a, b = pd.read_parquet(one / table), pd.read_parquet(two / table)
        assert a.id.tolist() == b.id.tolist()
        np.testing.assert_array_equal(a[comp.classes].to_numpy(), b[comp.classes].to_numpy())
    # trained for real: the two epochs' scores differ, and each file was written once, not once per machine
    rows = [json.loads(line) for line in (two / "fold0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and rows[0]["train_loss"] != rows[1]["train_loss"]
    rows_one = [json.loads(line) for line in (one / "fold0" / "metrics.jsonl").read_text().splitlines()]
    assert [{**r, "seconds": 0} for r in rows] == [{**r, "seconds": 0} for r in rows_one]
    assert json.loads((two / "lineage.json").read_text())["num_processes"] == 2
    assert not (two / ".kit_probe").exists()
    assert (two / "fold0" / "best.safetensors").exists() and not (two / "fold0" / "checkpoints").exists()


@pytest.mark.slow
def test_machines_that_do_not_share_the_run_folder_or_the_folds_stop_before_training(demo_copy, tmp_path):
    args = [f"--comp={demo_copy}", *ARGS]
    # per-machine run folders (as on per-node disks): every machine stops, naming the one that cannot see rank 0's
    results = launch_machines(BASELINE, *args, machines=2,
                              per_machine=[[f"--out_dir={tmp_path / 'node0'}"], [f"--out_dir={tmp_path / 'node1'}"]])
    for r in results:
        assert r.returncode != 0
        assert "is not one folder shared by every machine: process 1 on" in r.stderr, r.stderr[-3000:]
    assert not list((tmp_path / "node0").rglob("checkpoints"))
    # a copied data folder with other folds: stopped, naming folds.csv
    copy = tmp_path / "copy"
    shutil.copytree(demo_copy, copy)
    kit("folds", str(copy), "--seed=7", "--force")  # the folds the first launch made used the default seed
    results = launch_machines(BASELINE, *ARGS, f"--out_dir={tmp_path / 'runs'}", machines=2,
                              per_machine=[[f"--comp={demo_copy}"], [f"--comp={copy}"]])
    for r in results:
        assert r.returncode != 0
        assert "folds.csv: process 1 on" in r.stderr and "reads other folds than process 0" in r.stderr, \
            r.stderr[-3000:]
