"""Pre-flight checks before any training: tables and image files, every problem named at once."""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from .competition import Competition, CompetitionError
from .tasks import task_of


class PreflightError(CompetitionError):
    """The data has problems; the message lists each with its file, line and column."""


def _where(csv: Path, i: int, column: str, value) -> str:
    return f"{csv}:{i + 2} column {column!r} = {value!r}"  # +2: 1-based lines after the header


def check_train_table(comp: Competition, df: pd.DataFrame) -> list[str]:
    """Empty or duplicate ids and labels outside the competition's classes."""
    csv, problems = comp.path(comp.train_csv), []
    ids = df[comp.id_column]
    for i in ids.index[ids.str.strip() == ""]:
        problems.append(f"{_where(csv, i, comp.id_column, ids[i])}: empty id")
    dup = ids.duplicated(keep="first")
    for i in ids.index[dup]:
        first = ids.index[(ids == ids[i]) & ~dup][0]
        problems.append(f"{_where(csv, i, comp.id_column, ids[i])}: duplicate id (first at line {first + 2})")
    if task_of(comp).one_label_per_row:
        known = set(comp.classes)
        col = comp.target
        for i in df.index[~df[col].isin(known)]:
            problems.append(f"{_where(csv, i, col, df[col][i])}: unknown class (known: {comp.classes})")
    return problems


def check_image(path: Path) -> str | None:
    """None when the image is readable and decodes completely, else what is wrong with it."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable path ({e.strerror})"
    if os.path.isdir(path):
        return "unreadable path (a folder, not a file)"
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            im.load()  # verify() misses truncation; a full decode does not
    except UnidentifiedImageError:
        return "not an image"
    except PermissionError:
        return "unreadable (permission denied)"
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt or truncated ({e})"
    return None


def _manifest_key(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()


def scan_images(comp: Competition, ids: pd.Series, split: str, csv: Path, workers: int = 8) -> list[str]:
    """Every image referenced by `ids` must exist and decode; unchanged folders are not re-decoded."""
    paths = [comp.image_path(i, split) for i in ids]
    cache = comp.root / ".kit_cache" / f"scan_{split}.json"
    key = _manifest_key(paths)
    if cache.exists() and json.loads(cache.read_text()).get("ok") == key:
        return []
    with ThreadPoolExecutor(workers) as pool:
        verdicts = list(pool.map(check_image, paths))
    problems = [f"{_where(csv, i, comp.id_column, ids.iloc[i])}: {paths[i]}: {v}"
                for i, v in enumerate(verdicts) if v]
    if not problems:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ok": key}))
        os.replace(tmp, cache)
    return problems


def preflight(comp: Competition, include_test: bool = True) -> pd.DataFrame:
    """Check the train table and every train (and test) image; raise listing all problems."""
    df = comp.read_train()
    problems = check_train_table(comp, df)
    problems += scan_images(comp, df[comp.id_column], "train", comp.path(comp.train_csv))
    if include_test:
        test = comp.read_test()
        problems += scan_images(comp, test[comp.id_column], "test", comp.path(comp.test_csv or comp.sample_submission))
    if problems:
        shown = "\n  ".join(problems[:50])
        more = ""
        if len(problems) > 50:  # every one is kept: the full list goes to a file beside the data
            listing = comp.root / ".kit_cache" / "preflight_problems.txt"
            listing.parent.mkdir(exist_ok=True)
            listing.write_text("\n".join(problems) + "\n")
            more = f"\n  ... and {len(problems) - 50} more; all {len(problems)} are listed in {listing}"
        raise PreflightError(f"pre-flight found {len(problems)} problem(s):\n  {shown}{more}")
    return df
