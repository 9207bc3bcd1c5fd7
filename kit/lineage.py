"""What produced a run: code version, data and folds hashes (recorded beside every run)."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
from pathlib import Path


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


def write_lineage(trainer) -> None:
    """lineage.json beside the run: the experiment, its code, data and folds hashes, how it was launched."""
    from .folds import file_hash, folds_path  # lazy: folds reads competitions, lineage is read by everyone
    comp = trainer.comp
    folds_file, train_csv = folds_path(comp), comp.path(comp.train_csv)
    images = [comp.image_path(i, "train") for i in trainer.train_df[comp.id_column]]
    lineage = {
        "experiment": trainer.name, "experiment_file": str(Path(inspect.getfile(type(trainer))).resolve()),
        "trainer_class": type(trainer).__name__, "competition": str(comp.root),
        "folds_hash": file_hash(folds_file) if folds_file.exists() else None,
        "data_hash": data_hash(train_csv, images) if train_csv.exists() else None, **git_state(),
        "num_processes": trainer.accelerator.num_processes,
        "mixed_precision": trainer.accelerator.mixed_precision,
    }
    (trainer.run_dir / "lineage.json").write_text(json.dumps(lineage, indent=1))
