"""Predict from an exported package (`kit export`): what the code-competition notebook runs, offline.

The package is one flat folder (a Kaggle Dataset): package.json, the competition's competition.yaml,
and per run its config.yaml, experiment.py and fold weights. The test images are read where the
competition's data is mounted (read-only); everything written goes to a work folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml

from .competition import load_competition
from .infer import experiment_class, open_member, predict_member
from .rundir import RunDir
from .tasks import task_of

PACKAGE_FILE = "package.json"
PATH_KEYS = ("train_csv", "test_csv", "train_images", "test_images", "sample_submission")


def localise_competition(spec: Path, data: Path, work: Path) -> Path:
    """A competition.yaml in `work` whose file paths point into the mounted data folder `data`."""
    raw = yaml.safe_load(Path(spec).read_text()) or {}
    defaults = {"train_csv": "train.csv", "train_images": "train", "test_images": "test",
                "sample_submission": "sample_submission.csv"}
    for key in PATH_KEYS:
        rel = raw.get(key, defaults.get(key, ""))
        if rel:
            raw[key] = str((Path(data) / rel).resolve())
    raw.pop("leaderboard", None)
    raw["allow_outside_paths"] = True  # the data stays where Kaggle mounts it, outside this working copy
    work.mkdir(parents=True, exist_ok=True)
    (work / "competition.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return work


def read_package(package: str | Path) -> dict:
    """package.json of an exported package, with a clear error when the folder is not one."""
    path = Path(package) / PACKAGE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a folder written by `kit export`")
    return json.loads(path.read_text())


def predict_members(package: Path, meta: dict, comp_dir: Path, work: Path, device: str = "", batch_size: int = 0,
                    num_workers: int = -1) -> tuple[list, list, object]:
    """(test ids, per-member probabilities, the last member's trainer) for every run of the package."""
    ids, outs, trainer = None, [], None
    for m in meta["members"]:
        src = package / m["experiment"] if m.get("experiment") else None
        cls = experiment_class(src, m.get("trainer_class", ""), package / m["config"])
        trainer = open_member(package / m["config"], cls, comp_dir, m["name"], device, out_dir=str(work / "runs"))
        weights = {int(k): package / v for k, v in m["weights"].items()}
        member_ids, probs = predict_member(trainer, weights, m["views"], m["view_method"], batch_size, num_workers)
        if ids is not None and member_ids != ids:
            raise ValueError(f"{m['name']}: test ids differ from the first member's")
        ids = member_ids
        outs.append(probs)
    return ids, outs, trainer


def predict_package(package: str | Path, data: str | Path, out: str | Path = "submission.csv",
                    work: str | Path = "kit_work", device: str = "", batch_size: int = 0, num_workers: int = -1) -> dict:
    """Predict the test images in `data` with every run of the package, blend as `kit ensemble` did, write `out`.

    The CSV passes `kit validate`'s checks or is not written; the probabilities (test.parquet, or
    test_masks.npz for segmentation) stay in `work`.
    """
    from .submissions import build_submission, save_submission
    package, work = Path(package), Path(work)
    meta = read_package(package)
    comp_dir = localise_competition(package / "competition.yaml", Path(data), work / "competition")
    comp = load_competition(comp_dir)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ids, outs, trainer = predict_members(package, meta, comp_dir, work, device, batch_size, num_workers)
    if task_of(comp).masks:
        from .seg_submit import build_rle_submission
        from .segmentation import write_masks
        m = meta["members"][0]
        table = RunDir(work).masks("test")
        write_masks(table, ids, outs[0])
        RunDir(work).write_json("cv", {"threshold": m["threshold"], "min_area": m["min_area"]})
        sub = build_rle_submission(comp, work)
    else:
        from .ensemble import blend
        from .tables import write_probs
        stack = np.stack(outs).astype(np.float64)
        weights = np.array([m["weight"] for m in meta["members"]], np.float64)
        probs = stack[0] if len(outs) == 1 else blend(stack, meta["method"], comp, weights)
        table = RunDir(work).table("test")
        write_probs(table, ids, probs, comp)
        sub = build_submission(comp, table)
    path = save_submission(comp, sub, Path(out))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    trainer.accelerator.free_memory()
    info = {"submission": str(path), "probabilities": str(table), "images": len(ids), "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2), "cpu_s_per_1000": round(1000 * cpu / max(len(ids), 1), 2),
            "device": str(trainer.accelerator.device)}
    print(f"{len(ids)} test images, {len(outs)} run(s): CPU {info['cpu_s']} s ({info['cpu_s_per_1000']} s per 1,000 "
          f"images), wall {info['wall_s']} s on {info['device']}; wrote {path}")
    return info
