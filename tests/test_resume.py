"""Exact resume, end to end: runs killed with SIGKILL (mid-epoch and mid-checkpoint-write) end bitwise equal."""
import json
import os
import random
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from kit.checkpoint import newest_complete
from tests.helpers import BIN, ROOT, launch

BASELINE = ROOT / "experiments" / "exp001_baseline.py"
# 120 rows -> 6 batches of 16 per epoch; augmentation, MixUp, dropout and EMA all draw randomness
ARGS = ["--model=test_resnet", "--epochs=2", "--limit=120", "--batch_size=16", "--num_workers=0", "--ckpt_every=2",
        "--predict_test=false", "--aug=medium", "--mixup=0.2", "--drop_rate=0.2", "--ema_decay=0.9",
        "--keep_fold_ckpts=true"]  # the final checkpoints are compared: the finished fold keeps them
SEED = int(os.environ.get("KIT_TEST_SEED", random.randrange(10**6)))
SAME_WORKER = pytest.mark.xdist_group("resume_reference")  # the reference run is made once, on one worker


def _run(comp, out, *extra, fault="", exp=BASELINE, base=ARGS):
    """accelerate launch the baseline (or `exp`, with `base` args); with `fault`, expect it to die by SIGKILL there."""
    args = [f"--comp={comp}", f"--out_dir={out}", *base, *extra]
    if not fault:
        return launch(exp, *args)
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "accelerate_config.yaml"), str(exp), *args]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "KIT_FAULT": fault}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "fault: SIGKILL" in r.stderr, f"seed {SEED}, {fault}: not killed\n{r.stderr[-3000:]}"
    return r


def _final(out, name="exp001_baseline"):
    fold = out / name / "fold0"
    found, _ = newest_complete(fold / "checkpoints")
    losses = [(r["epoch"], r["batch"], r["loss"]) for r in map(json.loads, (fold / "steps.jsonl").read_text().splitlines())]
    return (load_file(found.path / "model.safetensors"), load_file(fold / "best.safetensors"), losses,
            (fold / "metrics.jsonl").read_text().splitlines())


def _assert_same(a, b, what):
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), f"{what}: final weight {k} differs (seed {SEED})"
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), f"{what}: best weight {k} differs (seed {SEED})"
    assert a[2] == b[2], f"{what}: per-step losses differ (seed {SEED})"
    scores = [[json.loads(r)[k] for k in ("epoch", "step", "train_loss", "valid/score")] for r in a[3]]
    assert scores == [[json.loads(r)[k] for k in ("epoch", "step", "train_loss", "valid/score")] for r in b[3]]


@pytest.fixture(scope="module")
def reference(demo_dir, tmp_path_factory):
    """One uninterrupted run (its folder and final state)."""
    comp = tmp_path_factory.mktemp("ref") / "demo"
    shutil.copytree(demo_dir, comp)
    out = comp.parent / "runs"
    _run(comp, out)
    return comp, out, _final(out)


@pytest.mark.slow
@SAME_WORKER
def test_two_uninterrupted_runs_are_bitwise_equal(reference, tmp_path):
    comp, _, ref = reference
    out = tmp_path / "runs"
    _run(comp, out)
    _assert_same(_final(out), ref, "second uninterrupted run")
    assert len(ref[2]) == 12  # 2 epochs x 6 batches, every loss logged once


@pytest.mark.slow
@SAME_WORKER
def test_three_sigkills_then_resume_is_bitwise_equal(reference, tmp_path):
    comp, _, ref = reference
    out = tmp_path / "runs"
    rng = random.Random(SEED)
    mid = rng.choice([1, 3, 5])  # a step inside epoch 0, not at a checkpoint (every 2 steps)
    _run(comp, out, fault=f"step:{mid}")
    r = _run(comp, out, fault=f"ckpt_write:{rng.randint(1, 3)}")  # dies with files written, marker not yet
    assert ("resumed from" in r.stdout + r.stderr) == (mid > 2)  # killed at step 1: no checkpoint yet, a fresh start
    _run(comp, out, fault=f"step:{rng.randint(9, 11)}")  # epoch 1, after every earlier kill point
    leftovers = list((out / "exp001_baseline" / "fold0" / "checkpoints").glob(".tmp-*"))
    r = _run(comp, out)
    assert "resumed from" in r.stdout + r.stderr
    _assert_same(_final(out), ref, f"killed at step {mid}, in a write, then in epoch 1 (tmp left: {leftovers})")


@pytest.mark.slow
@SAME_WORKER
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    comp, ref_out, ref = reference
    out = tmp_path / "runs"
    shutil.copytree(ref_out, out)
    (out / "exp001_baseline" / "fold0" / "done.json").unlink()  # as if killed before the fold was marked done
    root = out / "exp001_baseline" / "fold0" / "checkpoints"
    newest, _ = newest_complete(root)
    rng = random.Random(SEED)
    victim = rng.choice(sorted(p for p in newest.path.iterdir() if p.name != "COMPLETE.json"))
    if rng.random() < 0.5:
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    r = _run(comp, out)
    log = r.stdout + r.stderr
    assert f"skipping incomplete checkpoint {newest.path}: {victim.name}" in log, log[-2000:]
    assert "falling back to the previous complete checkpoint" in log
    _assert_same(_final(out), ref, f"resumed after damaging {victim.name}")


@pytest.mark.slow
def test_an_experiment_with_a_two_step_sam_update_resumes_bitwise_exactly(demo_copy, tmp_path):
    sam = ROOT / "experiments" / "exp004_sam.py"
    short = ("--epochs=1", "--ema_decay=0")
    _run(demo_copy, tmp_path / "whole", *short, exp=sam)
    ref = _final(tmp_path / "whole", "exp004_sam")
    plain = tmp_path / "plain"  # the same settings without the override: SAM must change the weights
    _run(demo_copy, plain, *short, "--name=exp004_sam")
    assert not torch.equal(*(_final(p, "exp004_sam")[0]["fc.weight"] for p in (tmp_path / "whole", plain)))
    out = tmp_path / "resumed"
    _run(demo_copy, out, *short, fault="step:3", exp=sam)  # killed after the checkpoint at step 2
    r = _run(demo_copy, out, *short, exp=sam)
    assert "resumed from" in r.stdout + r.stderr
    _assert_same(_final(out, "exp004_sam"), ref, "SAM run killed at step 3 and resumed")


@pytest.mark.slow
def test_ddp_run_resumes_under_two_processes_and_refuses_one(demo_copy, tmp_path):
    out = tmp_path / "runs"
    args = [f"--comp={demo_copy}", f"--out_dir={out}", *ARGS, "--epochs=1", "--batch_size=8"]
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "accelerate_config.yaml"), "--multi_gpu",
           "--num_processes", "2", "--main_process_port", str(_port()), str(BASELINE), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "KIT_FAULT": "step:3"}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "fault: SIGKILL at step 3" in r.stderr
    with pytest.raises(AssertionError, match=r"written by 2 process\(es\), this run has 1"):
        launch(BASELINE, *args)
    r = launch(BASELINE, *args, processes=2)
    assert "e0000-b000002: epoch 0, 2 batches into it, step 2" in r.stdout + r.stderr
    steps = [json.loads(x) for x in (out / "exp001_baseline" / "fold0" / "steps.jsonl").read_text().splitlines()]
    assert [s["batch"] for s in steps] == list(range(1, 7))  # 96 rows / (8 x 2 processes): each batch once


def _port():
    from tests.helpers import _free_port
    return _free_port()


def test_epoch_batches_do_not_depend_on_worker_history(demo_dir):
    """Epoch 1 seen by a loader whose persistent workers lived through epoch 0 == by a fresh one (a resume)."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from kit.data import ImageDataset, build_loader
    from kit.resume import LoopState, begin_epoch
    from kit.transforms import build_train_transforms

    paths = sorted((demo_dir / "train").glob("*.png"))[:24]

    def epoch_batches(epochs, skip=0):
        ds = ImageDataset(paths, list(range(24)), build_train_transforms("heavy", 16))
        acc = Accelerator(cpu=True)
        loader = acc.prepare(build_loader(ds, 8, num_workers=2, shuffle=True, seed=3))
        t = SimpleNamespace(train_loader=loader, accelerator=acc, config=SimpleNamespace(seed=3),
                            state=LoopState(pos=(epochs[0], skip)))
        out = []
        for e in epochs:
            t.state.epoch = e
            it, _, _ = begin_epoch(t)
            out = [(b["index"], b["image"]) for b in it]
        return out

    whole, resumed = epoch_batches([0, 1]), epoch_batches([1])
    skipped = epoch_batches([1], skip=1)
    assert len(whole) == 3 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(whole, resumed))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(whole[1:], skipped)) and len(skipped) == 2
