"""Soak: kill a training run with SIGKILL at random moments, resume it each time, check it ends exactly right.

    python -m benchmarks.soak [--kills=20] [--seed=0]      (or `make soak`)

One uninterrupted reference run first. Then rounds: `accelerate launch` the same run, wait until
it is training, SIGKILL its whole process group after a random delay, relaunch (it resumes on
its own), and so on until it finishes; a finished round must end with final weights, best
weights and per-step losses bitwise equal to the reference. Every kill in a round that ends
equal is survived. Checkpoint writes are slowed a little (KIT_FAULT=ckpt_sleep) and every 4th
kill waits for a write to start, so that kills land inside writes too; those are counted.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fire
import torch
from safetensors.torch import load_file

from kit.checkpoint import newest_complete
from kit.demo import make_demo

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARGS = ["--model=test_resnet", "--epochs=3", "--limit=200", "--batch_size=16", "--num_workers=2", "--ckpt_every=3",
        "--predict_test=false", "--aug=medium", "--mixup=0.2", "--drop_rate=0.2", "--ema_decay=0.9",
        "--keep_fold_ckpts=true"]  # the final state is compared, so the finished fold keeps its checkpoints


def _launch(comp: Path, out: Path, fault: str = "") -> subprocess.Popen:
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "accelerate_config.yaml"),
           str(ROOT / "experiments" / "exp001_baseline.py"), f"--comp={comp}", f"--out_dir={out}", *ARGS]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "KIT_FAULT": fault,
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: the kill reaches every process


def _final(out: Path):
    fold = out / "exp001_baseline" / "fold0"
    found, _ = newest_complete(fold / "checkpoints")
    losses = [json.loads(r)["loss"] for r in (fold / "steps.jsonl").read_text().splitlines()]
    return load_file(found.path / "model.safetensors"), load_file(fold / "best.safetensors"), losses


def _equal(a, b) -> bool:
    return (all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and all(torch.equal(a[1][k], b[1][k]) for k in a[1])
            and a[2] == b[2])


def _wait_training(proc: subprocess.Popen, fold: Path, since: float, timeout: float = 120) -> bool:
    """Wait until this launch has started training (it rewrote the fold's config); False if it ended first."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        cfg = fold / "config.yaml"
        if cfg.exists() and cfg.stat().st_mtime > since:
            return True
        time.sleep(0.05)
    return True


def _fresh_tmp(root: Path, since: float) -> list[Path]:
    """Temporary checkpoint folders created by the launch started at `since`."""
    out = []
    for p in root.glob(".tmp-*") if root.exists() else []:
        try:
            if p.stat().st_mtime > since:
                out.append(p)
        except FileNotFoundError:  # published (renamed) meanwhile
            pass
    return out


def _wait_writing(proc: subprocess.Popen, root: Path, since: float, timeout: float = 120) -> None:
    """Wait until this launch has a checkpoint write under way (a fresh .tmp- folder)."""
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if _fresh_tmp(root, since):
            return
        time.sleep(0.01)


def soak(kills: int = 20, seed: int = 0, keep: bool = False) -> dict:
    """Kill, resume, repeat; print `kills survived: N/N`."""
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="kit-soak-"))
    comp = make_demo(work / "demo")
    t0 = time.time()
    ref_proc = _launch(comp, work / "ref")
    _, err = ref_proc.communicate()
    if ref_proc.returncode:
        raise SystemExit(f"reference run failed:\n{err.decode()[-3000:]}")
    ref_s = time.time() - t0
    ref = _final(work / "ref")
    print(f"reference run: {ref_s:.0f} s, {len(ref[2])} batches", flush=True)
    done = survived = mid_write = rounds = 0
    while done < kills:
        rounds += 1
        out = work / f"round{rounds}"
        fold = out / "exp001_baseline" / "fold0"
        in_round = 0
        while True:
            since = time.time() - 1e-3
            proc = _launch(comp, out, fault="ckpt_sleep:0.3")
            killed = False
            if done < kills and _wait_training(proc, fold, since):
                if done % 4 == 3:  # every 4th kill: at a random moment inside the next checkpoint write
                    _wait_writing(proc, fold / "checkpoints", since)
                    time.sleep(rng.uniform(0, 0.25))
                else:
                    time.sleep(rng.uniform(0.5, ref_s / 4))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
            _, err = proc.communicate()
            if killed:
                done, in_round = done + 1, in_round + 1
                tmp = _fresh_tmp(fold / "checkpoints", since)
                mid_write += bool(tmp)
                print(f"kill {done}: round {rounds}{' (inside a checkpoint write)' if tmp else ''}", flush=True)
                continue
            if proc.returncode:
                raise SystemExit(f"round {rounds}: a resumed run failed:\n{err.decode()[-3000:]}")
            break
        ok = _equal(_final(out), ref)
        survived += in_round if ok else 0
        print(f"round {rounds}: {in_round} kills, final state {'bitwise equal' if ok else 'DIFFERENT'}", flush=True)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    print(f"kills survived: {survived}/{done} ({mid_write} inside a checkpoint write, {rounds} rounds, "
          f"{time.time() - t0:.0f} s)")
    return {"kills": done, "survived": survived, "mid_write": mid_write, "rounds": rounds}


if __name__ == "__main__":
    fire.Fire(soak)
