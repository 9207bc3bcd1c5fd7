"""Where kit writes the files it generates for a competition (folds.csv, caches, reports).

Data folders are inputs and may be read-only (Kaggle and many clusters mount them so). Generated
files go beside the data when that folder is writable, as before; otherwise, or whenever
KIT_CACHE_DIR is set, to `$KIT_CACHE_DIR/<name>-<hash of the folder path>` (default
`~/.cache/kit`), one sub-folder per competition folder.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

CACHE_ENV = "KIT_CACHE_DIR"


def work_dir(comp) -> Path:
    """The folder that holds a competition's generated files; created on first use."""
    root = Path(comp.root)
    base = os.environ.get(CACHE_ENV)
    if not base and is_writable(root.resolve()):
        return root
    base = Path(base or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kit")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    out = base / f"{root.resolve().name}-{digest}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def cache_dir(comp) -> Path:
    """Scan caches and problem listings (`.kit_cache` below the work folder)."""
    return work_dir(comp) / ".kit_cache"


def folds_file(comp) -> Path:
    """The competition's folds.csv: the generated one if any, else one shipped with the data, else where to write."""
    made = work_dir(comp) / "folds.csv"
    shipped = Path(comp.root) / "folds.csv"
    return made if made.exists() or not shipped.exists() else shipped


@functools.lru_cache(maxsize=64)
def is_writable(folder: Path) -> bool:
    """Whether a file can really be created in `folder` (read-only mounts, permissions, root-squashed NFS)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".kit-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True
