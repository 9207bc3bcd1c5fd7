"""Validation schemes: extra views scored per run, carried to the ledger, compared against public score."""
import importlib.util
import json
import sys

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import f1_score

from kit.compare import compare_schemes
from kit.ledger import Ledger, utc_now
from kit.submissions import run_lineage
from kit.competition import load_competition
from tests.helpers import ROOT


def _exp():
    spec = importlib.util.spec_from_file_location("exp001_schemes", ROOT / "experiments" / "exp001_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod.Exp


def test_a_run_scores_every_scheme_and_the_ledger_keeps_them(demo_copy, tmp_path):
    Exp = _exp()
    trainer = Exp(Exp.config.override(comp=str(demo_copy), out_dir=str(tmp_path), name="sch", epochs=1, limit=80,
                                      num_workers=0, model="test_resnet", predict_test=False,
                                      valid_schemes="plain,testlike"))
    trainer.fit(0)
    trainer.finish([])
    run = tmp_path / "sch"
    plain, testlike = (pd.read_parquet(run / "fold0" / f) for f in ("oof.parquet", "oof_testlike.parquet"))
    assert plain.id.tolist() == testlike.id.tolist()
    comp = load_competition(demo_copy)
    assert not np.allclose(plain[comp.classes], testlike[comp.classes])  # another view, other probabilities
    labels = trainer.train_df.set_index("id").loc[testlike.id, "label"].to_numpy()
    want = f1_score(labels, np.array(comp.classes)[testlike[comp.classes].to_numpy().argmax(1)], average="macro",
                    labels=comp.classes)
    meta = json.loads((run / "schemes.json").read_text())
    assert meta["primary"] == "plain" and meta["folds"] == [0]
    assert abs(meta["cv"]["testlike"] - want) < 1e-9
    assert run_lineage(run, comp)["cv_schemes"] == meta["cv"]


def test_compare_schemes_recommends_the_scheme_that_tracks_public(tmp_path):
    led = Ledger(tmp_path / "ledger.db")
    public = [0.30, 0.42, 0.35, 0.50]
    plain = [0.95, 0.93, 0.96, 0.94]  # high and in the wrong order
    testlike = [0.32, 0.45, 0.36, 0.52]
    for p, a, b in zip(public, plain, testlike):
        led.add({"created_utc": utc_now(), "competition": "demo", "public": p, "cv": a,
                 "config": {"valid_aug": "none"}, "cv_schemes": {"testlike": b}})
    got = compare_schemes(led, png=tmp_path / "s.png")
    assert got["recommended"] == "testlike" and (tmp_path / "s.png").exists()
    for name, cv in (("plain", plain), ("testlike", testlike)):
        s = got["schemes"][name]
        assert s["n"] == 4 and abs(s["spearman"] - stats.spearmanr(cv, public)[0]) < 1e-12
        assert abs(s["gap"] - np.mean(np.abs(np.subtract(cv, public)))) < 1e-12
