"""Time to first submission: `make demo` wall time on this machine, stage by stage.

    python -m benchmarks.bench_demo

Runs the commands `make -n demo` prints (set-up excluded: it is done once per machine), one by
one in the repository, as a user would, and prints each stage's seconds and the total.
Target: under 5 minutes on the 2-core CPU.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import fire

ROOT = Path(__file__).resolve().parents[1]


def demo_stages() -> list[str]:
    """The shell commands of `make demo`, in order, as make would run them."""
    out = subprocess.run(["make", "-n", "--no-print-directory", "demo"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if line.strip() and not line.startswith(("test ", "touch "))
            and "pip install" not in line and "-m venv" not in line]


def bench() -> dict:
    """Run every stage of `make demo`, print seconds per stage and the total."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    times = {}
    for cmd in demo_stages():
        t0 = time.perf_counter()
        subprocess.run(cmd, shell=True, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        label = " ".join(shlex.split(cmd)[:3]).replace(".venv/bin/", "")
        if label in times:  # the same command twice (a submit before and after TTA): keep both
            label += f" #{sum(k.startswith(label) for k in times) + 1}"
        times[label] = time.perf_counter() - t0
    total = sum(times.values())
    for label, s in times.items():
        print(f"  {s:7.1f} s  {label}")
    print(f"time to first submission (make demo, installed): {total:.0f} s (target <= 300 s)")
    return {"total_s": total, "stages": times}


if __name__ == "__main__":
    fire.Fire(bench)
