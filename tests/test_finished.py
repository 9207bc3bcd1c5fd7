"""A whole `--fold=all` run killed in fold 1 of 3 and relaunched: finished folds are kept as they are, the run's
tables are bitwise equal to an uninterrupted run's, lineage records every fold, finished folds drop checkpoints."""
import hashlib
import json
import os
import subprocess

import pytest

from kit import Config, Trainer, run
from tests.helpers import BIN, ROOT, launch, make_tiny

BASELINE = ROOT / "experiments" / "exp001_baseline.py"
# 24 rows in 3 folds: 16 train rows = 2 batches of 8 in the one epoch; a checkpoint after the first update and at
# the epoch end, so each fold writes 2 checkpoints (fold 1's second write is the 4th of the run)
ARGS = ["--model=test_resnet", "--img_size=16", "--epochs=1", "--batch_size=8", "--num_workers=0", "--n_folds=3",
        "--fold=all", "--ckpt_every=1", "--aug=medium", "--drop_rate=0.2", "--name=whole"]
TABLES = ("oof.parquet", "test.parquet")
FOLD_FILES = ("best.safetensors", "oof.parquet", "test.parquet", "metrics.jsonl", "steps.jsonl")


def _launch(comp, out, fault=""):
    args = [f"--comp={comp}", f"--out_dir={out}", *ARGS]
    if not fault:
        return launch(BASELINE, *args)
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "accelerate_config.yaml"), str(BASELINE),
           *args]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "KIT_FAULT": fault}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "fault: SIGKILL" in r.stderr, f"{fault}: not killed\n{r.stderr[-3000:]}"
    return r


def _stamp(path):
    """(mtime in ns, sha256) of a file: a rewrite with equal bytes still changes the first."""
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_whole_run_killed_in_fold_1_resumes_only_what_is_missing(tmp_path):
    comp = make_tiny(tmp_path / "comp")
    _launch(comp, tmp_path / "ref")  # uninterrupted (and makes folds.csv for both runs)
    ref, run_dir = tmp_path / "ref" / "whole", tmp_path / "runs" / "whole"
    _launch(comp, tmp_path / "runs", fault="ckpt_write:4")  # killed inside fold 1's second checkpoint write
    kept = sorted(p.name for p in (run_dir / "fold0").glob("checkpoints/*"))
    before = {f: _stamp(run_dir / "fold0" / f) for f in FOLD_FILES}

    r = _launch(comp, tmp_path / "runs")
    log = r.stdout + r.stderr
    assert {f: _stamp(run_dir / "fold0" / f) for f in FOLD_FILES} == before, "fold 0 was trained or predicted again"
    assert "fold 0: finished earlier" in log and "fold 1: finished earlier" not in log, log[-3000:]
    assert "resumed from" in log and "fold1/checkpoints/e0000-b000001" in log, log[-3000:]
    assert kept == [], f"finished fold 0 kept its full-state checkpoints {kept}"
    for table in TABLES:  # the run's tables, byte for byte
        assert (run_dir / table).read_bytes() == (ref / table).read_bytes(), f"{table}: not the uninterrupted run's"
    for k in range(3):
        for table in TABLES:
            assert (run_dir / f"fold{k}" / table).read_bytes() == (ref / f"fold{k}" / table).read_bytes(), (k, table)
        assert (run_dir / f"fold{k}" / "best.safetensors").exists()
        assert not (run_dir / f"fold{k}" / "checkpoints").exists()
    cv, ref_cv = (json.loads((d / "cv.json").read_text()) for d in (run_dir, ref))
    assert cv == ref_cv and cv["folds_done"] == [0, 1, 2]
    summary, ref_summary = ({k: v for k, v in json.loads((d / "summary.json").read_text()).items() if k != "seconds"}
                            for d in (run_dir, ref))
    assert summary == ref_summary

    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert sorted(lineage["folds"]) == ["0", "1", "2"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert lineage["commit"] == head and lineage["commits"] == [head]  # the old top-level keys stay
    assert {f["commit"] for f in lineage["folds"].values()} == {head}
    assert len({f["config_hash"] for f in lineage["folds"].values()}) == 1
    assert lineage["folds"]["1"]["resumed_from"].endswith("e0000-b000001") and lineage["folds"]["1"]["earlier"]
    assert all("finished_at" in f for f in lineage["folds"].values())
    assert all((run_dir / f"fold{k}" / "experiment.py").read_bytes() == BASELINE.read_bytes() for k in range(3))


class Exp(Trainer):
    config = Config(model="test_resnet", img_size=16, batch_size=8, epochs=1, num_workers=0, n_folds=3,
                    log_with="none", name="lin", predict_test=False, ckpt_every=0)


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_lineage_keeps_each_folds_commit_and_a_rerun_skips_finished_folds(tmp_path, monkeypatch, capsys):
    comp = make_tiny(tmp_path / "comp")
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)  # the code version is read where the run is launched
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    first = _git(repo, "commit", "-q", "-m", "a")
    out = tmp_path / "runs"
    args = [f"--comp={comp}", f"--out_dir={out}"]
    run(Exp, [*args, "--fold=0", "--keep_fold_ckpts=true"])
    (repo / "a.txt").write_text("b")
    second = _git(repo, "commit", "-q", "-am", "b")
    capsys.readouterr()
    run(Exp, [*args, "--fold=all"])  # fold 0 is done: only folds 1 and 2 train, under the second commit
    log = capsys.readouterr().out
    assert "fold 0: finished earlier" in log and "fold 1: finished earlier" not in log
    lineage = json.loads((out / "lin" / "lineage.json").read_text())
    assert {k: f["commit"] for k, f in lineage["folds"].items()} == {"0": first, "1": second, "2": second}
    assert lineage["commit"] == second and lineage["commits"] == sorted([first, second])
    assert (out / "lin" / "fold0" / "checkpoints").exists()  # --keep_fold_ckpts=true when fold 0 finished
    assert not (out / "lin" / "fold1" / "checkpoints").exists()
    summary = (out / "lin" / "summary.json").read_text()
    run(Exp, [*args, "--fold=all"])  # every fold done: nothing trains, the run's files stay as they were
    assert capsys.readouterr().out.count("finished earlier") == 3
    assert (out / "lin" / "summary.json").read_text() == summary
    # another training setting: the finished folds train again, with the new settings
    run(Exp, [*args, "--fold=0", "--lr=5e-3"])
    log = capsys.readouterr().out
    assert "fold 0: finished earlier, but lr: 0.001 -> 0.005" in log
    assert json.loads((out / "lin" / "fold0" / "done.json").read_text())["config"]["lr"] == 5e-3


def test_a_finished_fold_runs_again_when_what_it_wrote_no_longer_answers_the_command(tmp_path, capsys):
    from types import SimpleNamespace

    from accelerate import Accelerator

    from kit.finished import finished_summary
    from kit.rundir import RunDir

    run_dir = tmp_path / "r"
    fold_dir = run_dir / "fold0"
    fold_dir.mkdir(parents=True)
    for f in ("best.safetensors", "oof.parquet"):
        (fold_dir / f).write_bytes(b"x")
    saved = Config(predict_test=False)
    RunDir(run_dir).write_done(0, {"summary": {"fold": 0, "best_epoch": 1, "score": 0.5}, "config": saved.to_dict(),
                                   "schemes": [], "files": ["best.safetensors", "oof.parquet"]})

    def check(cfg):
        t = SimpleNamespace(config=cfg, accelerator=Accelerator(cpu=True), fold=0, run_dir=run_dir, fold_dir=fold_dir)
        return finished_summary(t), capsys.readouterr().out

    done, _ = check(saved.override(num_workers=4, log_with="tensorboard"))  # settings that do not change training
    assert done["summary"]["score"] == 0.5
    for changed, why in ((dict(predict_test=True), "test predictions are asked for now"),
                         (dict(valid_schemes="plain,testlike"), "validation schemes ['testlike'] are asked for now"),
                         (dict(epochs=3), "epochs: 10 -> 3")):
        done, out = check(saved.override(**changed))
        assert done is None and f"fold 0: finished earlier, but {why}: it runs again" in out, out
    assert check(saved.override(resume="never"))[0] is None
    (fold_dir / "oof.parquet").unlink()
    done, out = check(saved)
    assert done is None and "oof.parquet is missing" in out
