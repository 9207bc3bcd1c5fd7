"""Run experiments the way users do: `accelerate launch` in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY_CLASSES = ["a", "b", "c"]
TINY_YAML = """name: tiny
task: multiclass
id_column: id
target_columns: [label]
classes: [a, b, c]
train_csv: train.csv
train_images: train
test_images: test
image_pattern: "{id}.png"
sample_submission: sample_submission.csv
metric: macro_f1
submission: {kind: label, columns: [id, label]}
daily_limit: 5
"""
BIN = Path(sys.executable).parent


def launch(script: str | Path, *args: str, processes: int = 1, cwd: Path | None = None, timeout: int = 600,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """`accelerate launch` an experiment on the CPU (2 processes use DDP over gloo); raise on failure."""
    cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "accelerate_config.yaml")]
    full_env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **(env or {})}
    if processes > 1:
        cmd += ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(_free_port())]
        full_env["ACCELERATE_USE_CPU"] = "true"
    cmd += [str(script), *args]
    r = subprocess.run(cmd, cwd=cwd or ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def launch_machines(script: str | Path, *args: str, machines: int = 2, cwd: Path | None = None, timeout: int = 600,
                    per_machine: list[list[str]] | None = None) -> list[subprocess.CompletedProcess]:
    """`accelerate launch` one process per "machine" on localhost, as on a cluster: --num_machines, --machine_rank k.

    Every machine gets the same command (plus its `per_machine[k]` arguments); returns each launcher's result.
    """
    port = _free_port()
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    procs = []
    for k in range(machines):
        cmd = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "accelerate_config.yaml"), "--multi_gpu",
               "--num_machines", str(machines), "--machine_rank", str(k), "--num_processes", str(machines),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
               str(script), *args, *(per_machine[k] if per_machine else [])]
        procs.append((cmd, subprocess.Popen(cmd, cwd=cwd or ROOT, env=env, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True)))
    results = []
    for cmd, p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for _, q in procs:
                q.kill()
            raise
        results.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    return results


def kit(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `kit` console script."""
    r = subprocess.run([str(BIN / "kit"), *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "WANDB_MODE": "offline", **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"kit {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_tiny(root):
    """24 train and 6 test 16x16 PNGs over three classes."""
    import cv2
    import numpy as np
    import pandas as pd
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 6)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / split / f"{split[:2]}{i:02d}.png"), rng.integers(0, 255, (16, 16, 3), np.uint8))
    pd.DataFrame({"id": [f"tr{i:02d}" for i in range(24)], "label": [TINY_CLASSES[i % 3] for i in range(24)]}).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"id": [f"te{i:02d}" for i in range(6)], "label": "a"}).to_csv(
        root / "sample_submission.csv", index=False)
    (root / "competition.yaml").write_text(TINY_YAML)
    return root
