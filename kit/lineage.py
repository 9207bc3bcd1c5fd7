"""What produced a run: code version, data and folds hashes (recorded beside every run)."""
from __future__ import annotations

import hashlib
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
