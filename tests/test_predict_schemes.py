"""`kit predict --tta` scored under every validation scheme, judged on the recommended one; per-fold TTA test tables
feed pseudo-labels."""
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from kit.compare import compare_schemes, row_schemes
from kit.competition import load_competition
from kit.data import ImageDataset, read_image
from kit.ledger import Ledger, utc_now
from kit.models import create_model, load_state_dict
from kit.predict import predict_run
from kit.preprocess import Norm
from kit.pseudo import make_pseudo_table
from kit.submissions import run_cv, run_lineage, submit_run
from kit.transforms import build_eval_transforms, build_train_transforms
from kit.tta_judge import recommend_scheme
from tests.helpers import kit
from tests.test_schemes import _exp

NORM = Norm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")  # test_resnet's timm data config
ROT = [0, 1, 2, 3]  # --tta=rot: quarter turns


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory):
    """Two folds, one epoch, validated plain and scored under testlike too; 120 test images, none predicted yet."""
    tmp = tmp_path_factory.mktemp("tta_schemes")
    comp_dir = tmp / "demo"
    shutil.copytree(demo_dir, comp_dir, ignore=shutil.ignore_patterns(".kit_cache", "folds.csv"))
    for name in ("sample_submission.csv", "leaderboard/solution.csv"):  # 120 test images: a few seconds a pass
        table = pd.read_csv(comp_dir / name, dtype=str)
        table.head(120).to_csv(comp_dir / name, index=False)
    train = pd.read_csv(comp_dir / "train.csv", dtype=str)
    pd.DataFrame({"id": train.id, "fold": np.arange(len(train)) % 2}).to_csv(comp_dir / "folds.csv", index=False)
    Exp = _exp()
    trainer = Exp(Exp.config.override(comp=str(comp_dir), out_dir=str(tmp / "runs"), name="sch", epochs=1, limit=60,
                                      num_workers=0, model="test_resnet", predict_test=False,
                                      valid_schemes="plain,testlike"))
    summaries = [trainer.fit(k) for k in (0, 1)]
    trainer.finish(summaries)
    return {"tmp": tmp, "runs": tmp / "runs", "run": tmp / "runs" / "sch", "comp": load_competition(comp_dir),
            "train": trainer.train_df, "seed": trainer.config.seed}


def _fold_model(run, k):
    model = create_model("test_resnet", 10)
    model.load_state_dict(load_state_dict(run / f"fold{k}" / "best.safetensors"))
    return model.eval()


@torch.no_grad()
def _rot_mean(model, x):
    return torch.stack([model(torch.rot90(x, k, (-2, -1))).softmax(1) for k in ROT]).mean(0).numpy()


def _ledger_where_testlike_tracks_public(path):
    led = Ledger(path)
    for public, plain, testlike in ((0.30, 0.95, 0.31), (0.42, 0.93, 0.44), (0.35, 0.96, 0.37)):
        led.add({"created_utc": utc_now(), "competition": "demo", "public": public, "cv": plain,
                 "config": {"valid_aug": "none"}, "cv_schemes": {"testlike": testlike}})


def test_predict_scores_tta_on_every_scheme_and_the_recommended_one_decides(trained):
    run, comp, tmp = trained["run"], trained["comp"], trained["tmp"]
    subs = tmp / "subs_judge"
    _ledger_where_testlike_tracks_public(subs / "ledger.db")
    r = kit("predict", "sch", "--tta=rot", f"--runs={trained['runs']}", f"--out={subs}", cwd=tmp)
    info = json.loads((run / "predict.json").read_text())
    schemes = json.loads((run / "schemes.json").read_text())["cv"]
    assert set(info["schemes"]) == {"plain", "testlike"} and info["judged_on"] == "testlike"
    for name, s in info["schemes"].items():  # without TTA: what training scored; printed beside the TTA'd CV
        assert s["cv"] == pytest.approx(schemes[name], abs=1e-9)
        assert re.search(rf"{name}: without TTA: {s['cv']:.4f}  with TTA: {s['cv_tta']:.4f}", r.stdout)
    tl = info["schemes"]["testlike"]
    assert info["kept"] == (tl["cv_tta"] >= tl["cv"])
    verdict = "TTA kept" if info["kept"] else "TTA dropped"
    assert f"{verdict}, judged on testlike (recommended by kit cvlb): {tl['cv']:.4f} -> {tl['cv_tta']:.4f}" in r.stdout
    assert info["views"] == (["none", "rot90", "rot180", "rot270"] if info["kept"] else ["none"])

    # with TTA under testlike: each fold model on its fixed test-like views, turned by hand, scored by sklearn
    oof_tta = pd.read_parquet(run / "oof_tta_testlike.parquet")
    labels = trained["train"].set_index("id").loc[oof_tta.id, "label"].to_numpy()
    pred = np.array(comp.classes)[oof_tta[comp.classes].to_numpy().argmax(1)]
    assert tl["cv_tta"] == pytest.approx(f1_score(labels, pred, average="macro", labels=comp.classes), abs=1e-9)
    fold0 = pd.read_parquet(run / "fold0" / "oof_testlike.parquet").id.tolist()
    train = trained["train"].set_index("id")
    ds = ImageDataset([comp.image_path(i, "train") for i in fold0], train.loc[fold0, "label"].map(comp.classes.index),
                      build_train_transforms("testlike", 32, NORM), trained["seed"])
    x = torch.stack([ds[i]["image"] for i in range(6)])
    got = oof_tta.set_index("id").loc[fold0[:6], comp.classes].to_numpy()
    np.testing.assert_allclose(got, _rot_mean(_fold_model(run, 0), x), atol=1e-5)

    # a ledger where plain tracks public instead: plain would decide
    led = Ledger(tmp / "subs_plain" / "ledger.db")
    for public, plain, testlike in ((0.30, 0.31, 0.95), (0.42, 0.44, 0.93), (0.35, 0.36, 0.96)):
        led.add({"created_utc": utc_now(), "competition": "demo", "public": public, "cv": plain,
                 "config": {"valid_aug": "none"}, "cv_schemes": {"testlike": testlike}})
    assert recommend_scheme(comp, ["plain", "testlike"], led.path)[0] == "plain"
    assert recommend_scheme(comp, ["plain", "testlike"], None)[0] == "plain"  # no evidence: the run's own


@pytest.fixture(scope="module")
def predicted(trained):
    """The rotation views kept whatever the CV says."""
    return predict_run("sch", "rot", runs=trained["runs"], keep="always")


def test_a_tta_submission_carries_tta_scheme_cvs_to_the_ledger_and_cvlb(trained, predicted):
    run, comp, subs, info = trained["run"], trained["comp"], trained["tmp"] / "subs_submit", predicted
    assert info["kept"] and info["views"] == ["none", "rot90", "rot180", "rot270"]
    tta_cvs = {n: s["cv_tta"] for n, s in info["schemes"].items()}
    assert run_lineage(run, comp)["cv_schemes"] == tta_cvs
    assert run_cv(run, comp) == (pytest.approx(tta_cvs["plain"]), "all")
    row = submit_run("sch", "rot TTA", trained["runs"], subs, target="local")
    assert row["cv_schemes"] == tta_cvs and row["tta"]["schemes"] == info["schemes"]  # without and with, per scheme
    assert row_schemes(row) == pytest.approx(tta_cvs)
    from kit.compare import ledger_table
    assert ledger_table(Ledger(subs / "ledger.db")).tta.tolist() == ["rot90+rot180+rot270"]  # what `kit ledger` shows
    by = compare_schemes(Ledger(subs / "ledger.db"), "demo")
    assert by["schemes"]["testlike"]["gap"] == pytest.approx(abs(tta_cvs["testlike"] - row["public"]))


def test_pseudo_labels_come_from_each_folds_tta_predictions(trained, predicted):
    run, comp = trained["run"], trained["comp"]
    tables = {k: pd.read_parquet(run / f"fold{k}" / "test_tta.parquet") for k in (0, 1)}
    test = pd.read_parquet(run / "test.parquet")
    mean = (tables[0][comp.classes].to_numpy() + tables[1][comp.classes].to_numpy()) / 2
    np.testing.assert_allclose(mean, test[comp.classes].to_numpy(), atol=1e-6)
    ids = tables[1].id[:6].tolist()  # fold 1's table is fold 1's model alone, with the views
    tf = build_eval_transforms(32, NORM)
    x = torch.stack([tf(image=read_image(comp.image_path(i, "test")))["image"] for i in ids])
    np.testing.assert_allclose(tables[1][comp.classes].to_numpy()[:6], _rot_mean(_fold_model(run, 1), x), atol=1e-5)

    pseudo = make_pseudo_table(run, comp, [0, 1], 0.0, 0, soft=True)
    for k in (0, 1):
        np.testing.assert_allclose(pseudo[pseudo.fold == k][comp.classes].to_numpy(),
                                   tables[k][comp.classes].to_numpy(), atol=1e-6)
    from kit.pseudo import format_source, label_source
    source = label_source(run, [0, 1])
    assert source["tta"] and source["views"] == ["none", "rot90", "rot180", "rot270"]
    assert source["tables"] == {"0": "fold0/test_tta.parquet", "1": "fold1/test_tta.parquet"}
    assert "with TTA (none,rot90,rot180,rot270, mean)" in format_source(1, source)

    predict_run("sch", "none", runs=trained["runs"], oof=False)  # no views: no TTA tables left to label from
    assert not list(run.glob("fold*/test_tta.parquet"))


def test_the_deciding_scheme_alone_keeps_or_drops_the_views(tmp_path):
    from kit import Competition
    from kit.tta_judge import format_judgement, judge_tta
    scores = {"plain": {"cv": 0.80, "cv_tta": 0.74}, "testlike": {"cv": 0.62, "cv_tta": 0.66}}
    d = judge_tta(scores, "testlike", "recommended by kit cvlb")
    assert d["kept"] and not judge_tta(scores, "plain", "the run's own")["kept"]
    assert judge_tta(scores, "plain", "the run's own", keep="always")["kept"]
    lines = format_judgement("macro_f1", scores, d, "plain")
    assert lines[1] == "  plain: without TTA: 0.8000  with TTA: 0.7400  (run's own)"
    assert lines[-1] == "TTA kept, judged on testlike (recommended by kit cvlb): 0.6200 -> 0.6600 with TTA"
    with pytest.raises(ValueError, match="keep_tta"):
        judge_tta(scores, "plain", "", keep="sometimes")
    comp = Competition(root=tmp_path, name="x", classes=["a", "b"])
    assert recommend_scheme(comp, ["plain", "testlike"], tmp_path / "no_ledger.db")[0] == "plain"
    (tmp_path / "adval").mkdir()  # no scored submission yet: kit adval's most test-like view decides
    (tmp_path / "adval" / "adval.json").write_text(json.dumps({"chosen_aug": "testlike"}))
    assert recommend_scheme(comp, ["plain", "testlike"], tmp_path / "no_ledger.db") == (
        "testlike", "most test-like view by kit adval; no scored submission yet")
