"""`kit submit` on the local leaderboard: lineage in the ledger, scores, and the ledger/score/diff/cvlb commands."""
import hashlib
import json
import re
import sqlite3
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from scipy import stats
from sklearn.metrics import f1_score

from kit.submissions import SubmissionError, submit_run
from tests.helpers import ROOT, kit
from tests.run_factory import make_run


def _sklearn_scores(comp_dir, csv):
    """Public/private macro-F1 of a label CSV, computed straight from the solution file."""
    truth = pd.read_csv(comp_dir / "leaderboard" / "solution.csv", dtype=str)
    sub = pd.read_csv(csv, dtype=str).set_index("id")["label"]
    return {u.lower(): f1_score(truth.label[truth.Usage == u], sub.loc[truth.id[truth.Usage == u]].to_numpy(),
                                average="macro", labels=[str(c) for c in range(10)], zero_division=0)
            for u in ("Public", "Private")}


def test_submit_records_lineage_and_local_scores(demo_copy, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "submissions"
    tta = {"tta": ["identity", "hflip"], "views": 2}
    run = make_run(runs, demo_copy, "exp_a", 0.7, seed=3, cv=0.81, predict=tta)
    row = submit_run("exp_a", "first try", runs, out)
    csv = out / row["file"].split("/")[-1]
    assert csv.exists() and hashlib.sha256(csv.read_bytes()).hexdigest() == row["sha256"]
    lineage = json.loads((run / "lineage.json").read_text())
    assert row["experiments"] == ["exp_a"] and row["members"] is None
    assert (row["git_commit"], bool(row["git_dirty"])) == (lineage["commit"], lineage["dirty"])
    assert (row["data_hash"], row["folds_hash"]) == (lineage["data_hash"], lineage["folds_hash"])
    assert row["config"] == yaml.safe_load((run / "config.yaml").read_text())
    assert (row["cv"], row["cv_folds"], row["tta"], row["message"]) == (0.81, "all", tta, "first try")
    assert (row["target"], row["status"], row["competition"]) == ("local", "scored", "demo")
    want = _sklearn_scores(demo_copy, csv)
    assert row["public"] == pytest.approx(want["public"]) and row["private"] == pytest.approx(want["private"])
    assert 0.55 < row["public"] < 0.85  # predictions right for ~70% of the test ids


def test_ensemble_members_and_partial_cv_are_recorded(demo_copy, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "submissions"
    members = [{"name": "exp_a", "weight": 0.6}, {"name": "exp_b", "weight": 0.4}]
    make_run(runs, demo_copy, "ens1", 0.8, ensemble={"members": members, "method": "mean"})
    (runs / "ens1" / "cv.json").write_text(json.dumps({"cv": None, "per_fold": {"0": 0.7, "2": 0.9}}))
    row = submit_run("ens1", "blend", runs, out)
    assert row["experiments"] == ["ens1", "exp_a", "exp_b"] and row["members"] == members
    assert row["cv"] == pytest.approx(0.8) and row["cv_folds"] == "0,2"
    # an ensemble folder with no config.yaml of its own: the competition comes from its members
    make_run(runs, demo_copy, "exp_a", 0.5)
    ens2 = make_run(runs, demo_copy, "ens2", 0.6, ensemble={"members": {"exp_a": 0.5, "exp_z": 0.5}})
    (ens2 / "config.yaml").unlink()
    row = submit_run("ens2", "", runs, out)
    assert row["experiments"] == ["ens2", "exp_a", "exp_z"] and row["status"] == "scored" and row["config"] is None
    # a run stopped before collecting its folds: the CV comes from its fold OOF table
    run = make_run(runs, demo_copy, "exp_c", 0.5, seed=1)
    train = pd.read_csv(demo_copy / "train.csv", dtype=str).iloc[:100]
    rng = np.random.default_rng(0)
    oof = pd.DataFrame(rng.dirichlet(np.ones(10), len(train)), columns=[str(c) for c in range(10)])
    oof.insert(0, "id", train.id.to_numpy())
    (run / "fold0").mkdir()
    oof.to_parquet(run / "fold0" / "oof.parquet", index=False)
    row = submit_run("exp_c", "", runs, out)
    want = f1_score(train.label, oof[[str(c) for c in range(10)]].to_numpy().argmax(1).astype(str),
                    average="macro", labels=[str(c) for c in range(10)], zero_division=0)
    assert row["cv"] == pytest.approx(want) and row["cv_folds"] == "0"


def test_bad_test_table_is_refused_before_anything_is_written(demo_copy, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "submissions"
    run = make_run(runs, demo_copy, "exp_bad", 0.5)
    table = pd.read_parquet(run / "test.parquet")
    table.iloc[5:].to_parquet(run / "test.parquet", index=False)  # five test ids lost
    make_run(runs, demo_copy, "exp_ok", 0.5)
    submit_run("exp_ok", "", runs, out)
    before = sorted(p.name for p in out.iterdir()), (out / "ledger.db").read_bytes()
    with pytest.raises(SubmissionError, match=r"row \d+, column 'label': empty cell"):
        submit_run("exp_bad", "", runs, out)
    assert sorted(p.name for p in out.iterdir()) == before[0]
    assert len(sqlite3.connect(out / "ledger.db").execute("SELECT id FROM submissions").fetchall()) == 1


def test_commands_ledger_score_diff_cvlb(demo_copy, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "submissions"
    skills = [0.2, 0.45, 0.6, 0.85]
    for i, s in enumerate(skills):
        make_run(runs, demo_copy, f"exp{i}", s, seed=i, cv=0.1 + s + 0.05 * (-1) ** i)
        r = kit("submit", f"exp{i}", "-m", f"skill {s}", f"--runs={runs}", f"--out={out}", cwd=tmp_path)
        assert re.search(r"public macro_f1: 0\.\d{4}", r.stdout), r.stdout
    # a submission scored elsewhere: recorded by hand
    spec = yaml.safe_load((demo_copy / "competition.yaml").read_text())
    spec["leaderboard"] = ""
    (demo_copy / "competition.yaml").write_text(yaml.safe_dump(spec))
    make_run(runs, demo_copy, "exp9", 0.5, seed=9, cv=0.3)
    r = kit("submit", "exp9", f"--runs={runs}", f"--out={out}", cwd=tmp_path)
    assert "score pending" in r.stdout
    kit("score", "5", "--public=0.41", "--private=0.39", f"--out={out}", cwd=tmp_path)
    con = sqlite3.connect(out / "ledger.db")
    rows = pd.read_sql("SELECT * FROM submissions", con)
    assert rows.set_index("id").loc[5, ["public", "private", "target", "status"]].tolist() == [0.41, 0.39, "manual",
                                                                                              "scored"]
    listed = kit("ledger", f"--out={out}", cwd=tmp_path).stdout.splitlines()
    assert [int(line.split()[0]) for line in listed[1:]] == [5, 4, 3, 2, 1]  # newest first
    by_public = kit("ledger", "--sort=public", f"--out={out}", cwd=tmp_path).stdout.splitlines()
    assert [int(line.split()[0]) for line in by_public[1:]] == rows.sort_values("public", ascending=False).id.tolist()
    assert kit("ledger", "--sort=nope", f"--out={out}", cwd=tmp_path, check=False).returncode != 0

    a, b = rows.file[0], rows.file[3]
    r = kit("diff", "1", b, f"--comp={demo_copy}", f"--out={out}", cwd=tmp_path)
    la, lb = (pd.read_csv(tmp_path / f, dtype=str).set_index("id").label for f in (a, b))
    n_differ = int((la != lb.loc[la.index]).sum())
    assert f"{n_differ} of {len(la)} ids differ" in r.stdout
    png = next(out.glob("diff_*.png"))
    w, h = Image.open(png).size
    assert w == 8 * 160 and h == 6 * 190  # 48 differing images (the cap), 8 per row

    r = kit("cvlb", f"--out={out}", cwd=tmp_path)
    both = rows.dropna(subset=["cv", "public"])
    assert len(both) == 5 and f"{len(both)} submission(s)" in r.stdout
    pearson = np.corrcoef(both.cv, both.public)[0, 1]
    spearman = stats.pearsonr(both.cv.rank(), both.public.rank())[0]
    assert f"Pearson {pearson:.3f}" in r.stdout and f"Spearman {spearman:.3f}" in r.stdout
    assert Image.open(out / "cvlb.png").size[0] > 0


def test_score_a_csv_made_elsewhere(demo_copy, tmp_path):
    csv = tmp_path / "by_hand.csv"
    csv.write_bytes((demo_copy / "sample_submission.csv").read_bytes())
    out = tmp_path / "submissions"
    r = kit("score", str(csv), "--public=0.123", f"--comp={demo_copy}", f"--out={out}", cwd=tmp_path)
    assert "public 0.123" in r.stdout
    row = pd.read_sql("SELECT * FROM submissions", sqlite3.connect(out / "ledger.db")).iloc[0]
    assert (row.file, row.target, row.competition, row.public) == (str(csv), "manual", "demo", 0.123)
    assert row.sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert kit("ledger", f"--out={tmp_path / 'elsewhere'}", cwd=tmp_path, check=False).returncode != 0


def test_make_submit_is_kit_submit():
    # Under `make test` the child make inherits MAKELEVEL and would print "Entering directory" lines.
    r = subprocess.run(["make", "-n", "--no-print-directory", "submit", "EXP=exp007_x", "MSG=two words"], cwd=ROOT,
                       capture_output=True, text=True)
    # MSG travels in the environment (KIT_MSG), never inside the shell text: tests/test_cli_small.py
    assert r.stdout.strip().splitlines()[-1] == '.venv/bin/kit submit exp007_x -m "$KIT_MSG"'
