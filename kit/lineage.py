"""What produced a run: code version, data and folds hashes (recorded beside every run), per fold too.

lineage.json keeps its top-level keys (the newest launch's commit, dirty, hashes) and adds `folds`:
per fold the commit, dirty flag and config hash it was trained with (a fold resumed by other code
keeps the earlier ones under `earlier`), when it started and finished. `commits` lists every
commit the run's folds came from: more than one means the folds were trained by different code.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .folds import file_hash, folds_path
from .rundir import RunDir


def git_state(cwd: str | Path = ".") -> dict:
    """Current commit and whether the work tree has uncommitted changes (None outside git)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").stdout.strip())
        return {"commit": head.stdout.strip(), "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def data_hash(csv: Path, image_paths: list[Path]) -> str:
    """sha256 over the train CSV bytes and each image's name and size (a manifest that survives copies)."""
    h = hashlib.sha256(Path(csv).read_bytes())
    for p in image_paths:
        try:
            st = os.stat(p)
            h.update(f"{Path(p).name}|{st.st_size}\n".encode())
        except OSError:
            h.update(f"{Path(p).name}|missing\n".encode())
    return h.hexdigest()


def config_hash(config) -> str:
    """sha256 of the resolved config (keys sorted): equal settings, equal hash."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()


def write_lineage(trainer) -> None:
    """lineage.json beside the run (what produced it, per fold too) and the experiment file, run-level and per fold."""
    comp = trainer.comp
    src = Path(inspect.getfile(type(trainer)))
    if src.exists():  # run-level: the newest launch's; fold<k>/experiment.py: the code that trained that fold
        for folder in (trainer.run_dir, trainer.fold_dir):
            shutil.copy(src, folder / "experiment.py")
    folds_file, train_csv = folds_path(comp), comp.path(comp.train_csv)
    images = [comp.image_path(i, "train") for i in trainer.train_df[comp.id_column]]
    code = git_state()
    run = RunDir(trainer.run_dir)
    folds = _fold_records(run.read_json("lineage"))
    entry = {**code, "config_hash": config_hash(trainer.config), "started_at": time.time(),
             "resumed_from": str(trainer.resume_dir) if trainer.resume_dir is not None else None}
    prev = folds.get(str(trainer.fold))
    if prev and trainer.resume_dir is not None:  # the same training goes on: keep what started it
        earlier = {k: prev.get(k) for k in ("commit", "dirty", "config_hash", "started_at", "resumed_from")}
        entry["earlier"] = [*prev.get("earlier", []), earlier]
    folds[str(trainer.fold)] = entry
    lineage = {
        "experiment": trainer.name, "experiment_file": str(src.resolve()),
        "trainer_class": type(trainer).__name__, "competition": str(comp.root),
        "folds_hash": file_hash(folds_file) if folds_file.exists() else None,
        "data_hash": data_hash(train_csv, images) if train_csv.exists() else None, **code,
        "num_processes": trainer.accelerator.num_processes,
        "mixed_precision": trainer.accelerator.mixed_precision,
    }
    run.write_json("lineage", _with_folds(lineage, folds))


def record_fold_end(trainer, summary: dict) -> None:
    """Add the finish time and best score to the fold's lineage record."""
    run = RunDir(trainer.run_dir)
    lineage = run.read_json("lineage") or {}
    folds = _fold_records(lineage)
    folds.setdefault(str(trainer.fold), {}).update(finished_at=time.time(), best_epoch=summary["best_epoch"],
                                                   score=summary["score"])
    run.write_json("lineage", _with_folds(lineage, folds))


def _fold_records(lineage: dict | None) -> dict:
    folds = (lineage or {}).get("folds")
    return dict(folds) if isinstance(folds, dict) else {}  # a lineage.json from before per-fold records: none


def _with_folds(lineage: dict, folds: dict) -> dict:
    ordered = dict(sorted(folds.items(), key=lambda kv: (not kv[0].isdigit(), int(kv[0]) if kv[0].isdigit() else 0)))
    commits = sorted({f["commit"] for f in ordered.values() if f.get("commit")})
    return {**lineage, "folds": ordered, "commits": commits}
