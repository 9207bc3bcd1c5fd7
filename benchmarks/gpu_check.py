"""The GPU path end to end, in a few minutes on one CUDA GPU (not part of `make test`, which runs on CPUs).

    python -m benchmarks.gpu_check [--model=resnet18 --img_size=64]

1. uint8 batches normalised on the GPU equal albumentations' CPU normalisation, bitwise (channels_last too).
2. bf16 and fp16, gradient accumulation 2, channels_last + torch.compile: a fold trains, losses finite.
3. fp16 with one NaN loss (KIT_FAULT=nonfinite:3) and --skip_nonfinite=1: that batch makes no optimizer step,
   the run goes on (next to the grad scaler's own overflow skips).
4. resume on the GPU: a run SIGKILLed mid-epoch and resumed ends with best weights bitwise equal to an
   uninterrupted run's.
Prints one line per check and exits non-zero if any fails.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import fire
import numpy as np
import torch

from kit.transforms import build_eval_transforms, normalize_images

from .common import demo_competition

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "experiments" / "exp001_baseline.py"


def launch(args: list[str], precision: str = "no", fault: str = "") -> subprocess.CompletedProcess:
    """accelerate launch the baseline on GPU 0 with a mixed precision."""
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
           str(ROOT / "accelerate_config.yaml"), "--mixed_precision", precision, str(BASELINE), *args]
    env = {**os.environ, "WANDB_MODE": "offline", "KIT_FAULT": fault, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def check_normalise() -> bool:
    """Device normalisation of random uint8 images against the CPU pipeline."""
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(8)]
    cpu = torch.stack([build_eval_transforms(40)(image=i)["image"] for i in imgs])
    raw = torch.stack([build_eval_transforms(40, normalize=False)(image=i)["image"] for i in imgs]).cuda()
    gpu = normalize_images(raw, channels_last=True)
    return torch.equal(gpu.cpu(), cpu) and gpu.is_contiguous(memory_format=torch.channels_last)


def check(model: str = "resnet18", img_size: int = 64) -> None:
    """Run every check; print each result."""
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    comp, out = demo_competition(), Path(tempfile.mkdtemp(prefix="kit-gpu-"))
    base = [f"--comp={comp}", f"--model={model}", f"--img_size={img_size}", "--limit=400", "--epochs=2",
            "--batch_size=32", "--resume=never"]
    results = {"uint8 normalised on the GPU == CPU albumentations": check_normalise()}
    for prec in ("bf16", "fp16"):
        r = launch([*base, f"--out_dir={out}", f"--name={prec}", "--grad_accum=2", "--channels_last=true",
                    "--compile=true"], prec)
        rows = (out / prec / "fold0" / "metrics.jsonl").read_text().splitlines() if r.returncode == 0 else []
        results[f"{prec} + accum 2 + channels_last + compile trains"] = r.returncode == 0 and len(rows) == 2
        if r.returncode:
            print(r.stderr[-3000:])
    # one batch with a NaN loss: skipped without an optimizer step, the run goes on
    r = launch([*base, f"--out_dir={out}", "--name=skip", "--skip_nonfinite=1"], "fp16", fault="nonfinite:3")
    skipped = "batch skipped" in r.stdout + r.stderr
    results["fp16: a non-finite step is skipped, the run goes on"] = r.returncode == 0 and skipped
    # resume bitwise: kill mid-epoch 1, resume, compare with an uninterrupted run
    launch([*base, f"--out_dir={out}", "--name=whole", "--ckpt_every=5"], "bf16")
    killed = launch([*base, f"--out_dir={out}", "--name=cut", "--ckpt_every=5"], "bf16", fault="step:12")
    resumed = launch([a for a in base if a != "--resume=never"] + [f"--out_dir={out}", "--name=cut",
                                                                  "--ckpt_every=5"], "bf16")
    from safetensors.torch import load_file
    same = killed.returncode != 0 and resumed.returncode == 0 and all(
        torch.equal(a, b) for a, b in zip(load_file(out / "whole" / "fold0" / "best.safetensors").values(),
                                          load_file(out / "cut" / "fold0" / "best.safetensors").values()))
    results["bf16 resume after SIGKILL: best weights bitwise equal"] = same
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    for name, ok in results.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    raise SystemExit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    fire.Fire(check)
