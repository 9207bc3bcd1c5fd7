"""All folds under 2-process DDP, then `kit predict` with TTA: complete OOF, and test tables a hand loop reproduces."""
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from kit.competition import load_competition
from kit.data import read_image
from kit.folds import file_hash
from kit.metrics import macro_f1
from kit.models import create_model, load_state_dict
from kit.submissions import run_cv
from kit.tables import current_predict
from kit.folds import limit_rows
from kit.preprocess import Norm
from kit.transforms import build_eval_transforms
from tests.helpers import ROOT, kit, launch

BASELINE = ROOT / "experiments" / "exp001_baseline.py"


def _probs(path, comp, ids):
    return pd.read_parquet(path).set_index("id").loc[ids, comp.classes].to_numpy()


@pytest.mark.slow
def test_all_folds_under_ddp_then_predict_with_tta(demo_copy, tmp_path):
    runs = tmp_path / "runs"
    kit("folds", str(demo_copy), "--n=2", cwd=tmp_path)
    launch(BASELINE, f"--comp={demo_copy}", f"--out_dir={runs}", "--fold=all", "--limit=60", "--epochs=1",
           "--batch_size=8", "--num_workers=0", "--model=test_resnet", processes=2)
    run, comp = runs / "exp001_baseline", load_competition(demo_copy)
    train = limit_rows(comp.read_train(), comp.target, 60)
    labels = train.set_index("id").label

    # every train id exactly once in the OOF, though each fold's rows were split over two processes
    oof = pd.read_parquet(run / "oof.parquet")
    assert oof.id.is_unique and sorted(oof.id) == sorted(train.id)
    cv = json.loads((run / "cv.json").read_text())
    assert set(cv["per_fold"]) == {"0", "1"} and len(cv["per_class_f1"]) == 10
    assert cv["cv"] == pytest.approx(macro_f1(labels.loc[oof.id].astype(int).to_numpy(), oof[comp.classes].to_numpy()))
    assert (run / "confusion.png").stat().st_size > 0
    assert json.loads((run / "lineage.json").read_text())["folds_hash"] == file_hash(demo_copy / "folds.csv")

    # no views: predict reproduces what training wrote
    trained_test = pd.read_parquet(run / "test.parquet")
    kit("predict", "exp001_baseline", "--tta=none", f"--runs={runs}", cwd=tmp_path)
    np.testing.assert_allclose(_probs(run / "oof_tta.parquet", comp, oof.id), oof[comp.classes], atol=1e-5)
    np.testing.assert_allclose(_probs(run / "test.parquet", comp, trained_test.id), trained_test[comp.classes],
                               atol=1e-5)

    r = kit("predict", "exp001_baseline", "--tta=hflip", "--keep_tta=always", f"--runs={runs}", cwd=tmp_path)
    without, with_tta = map(float, re.search(r"without TTA: ([\d.]+)\s+with TTA: ([\d.]+)", r.stdout).groups())
    oof_tta = pd.read_parquet(run / "oof_tta.parquet")
    assert oof_tta.id.is_unique and sorted(oof_tta.id) == sorted(train.id)
    assert without == pytest.approx(cv["cv"], abs=1e-4)
    assert with_tta == pytest.approx(macro_f1(labels.loc[oof_tta.id].astype(int).to_numpy(),
                                              oof_tta[comp.classes].to_numpy()), abs=1e-4)
    assert json.loads((run / "predict.json").read_text())["views"] == ["none", "hflip"]
    assert run_cv(run, comp) == (pytest.approx(with_tta, abs=1e-4), "all")  # the ledger's CV is the TTA one

    # reference: each fold model on each view of a few test images, one by one, averaged by hand
    test = pd.read_parquet(run / "test.parquet")
    assert len(test) == 1242 and np.allclose(test[comp.classes].sum(axis=1), 1, atol=1e-5)
    ids = test.id[:12].tolist()
    tf = build_eval_transforms(32, Norm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear"))  # test_resnet's timm data config
    x = torch.stack([tf(image=read_image(comp.image_path(i, "test")))["image"] for i in ids])
    want = []
    for k in (0, 1):
        model = create_model("test_resnet", 10)
        model.load_state_dict(load_state_dict(run / f"fold{k}" / "best.safetensors"))
        with torch.no_grad():
            want += [model.eval()(x).softmax(1), model(x.flip(-1)).softmax(1)]
    np.testing.assert_allclose(_probs(run / "test.parquet", comp, ids), torch.stack(want).mean(0).numpy(), atol=1e-5)

    trained_test.to_parquet(run / "test.parquet", index=False)  # a retrained test table: the TTA record is stale
    assert current_predict(run) is None and run_cv(run, comp) == (pytest.approx(cv["cv"]), "all")
