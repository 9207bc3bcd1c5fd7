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
from .data import read_image
from .workdir import cache_dir

MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # where PIL itself raises DecompressionBombError


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


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """None when the loader can decode the image, else what is wrong with it.

    The pixels are decoded by `kit.data.read_image` (OpenCV), exactly as training reads them: a file
    PIL opens but OpenCV cannot (TGA, ICO, PCX, SGI, QOI under a .png name) is refused here, not mid-epoch.
    PIL reads only the header first, so a decompression bomb is refused before any decoding.
    """
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
    fmt = None
    try:
        with Image.open(path) as im:  # the header only
            fmt, (w, h) = im.format, im.size
            if w * h > max_pixels:
                return (f"{w}x{h} pixels is over the limit of {max_pixels:,} (a decompression bomb?); raise "
                        f"max_image_pixels in competition.yaml if the images really are this large")
            im.verify()  # chunk checksums: catches a cut PNG without decoding it
    except UnidentifiedImageError:
        pass  # OpenCV below has the last word
    except PermissionError:
        return "unreadable (permission denied)"
    except Image.DecompressionBombError as e:
        return f"refused as a decompression bomb ({e})"
    except (OSError, SyntaxError, ValueError) as e:
        return f"corrupt or truncated ({e})"
    if fmt == "JPEG":  # OpenCV fills a cut JPEG with grey and only warns: PIL's full decode refuses it
        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, SyntaxError, ValueError) as e:
            return f"corrupt or truncated ({e})"
    try:
        read_image(path)
    except OSError:
        if fmt:
            return f"an image in {fmt} format, which OpenCV (the training loader) cannot decode; save it as PNG or JPEG"
        return "not an image"
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
    cache = cache_dir(comp) / f"scan_{split}.json"
    key = _manifest_key(paths)
    if cache.exists() and json.loads(cache.read_text()).get("ok") == key:
        return []
    limit = comp.max_image_pixels
    if limit > MAX_PIXELS:  # competition.yaml allows larger images: PIL must not refuse them at open
        Image.MAX_IMAGE_PIXELS = None
    with ThreadPoolExecutor(workers) as pool:
        verdicts = list(pool.map(lambda p: check_image(p, limit), paths))
    problems = [f"{_where(csv, i, comp.id_column, ids.iloc[i])}: {paths[i]}: {v}"
                for i, v in enumerate(verdicts) if v]
    if not problems:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"ok": key}))
        os.replace(tmp, cache)
    return problems


def check_folders(comp: Competition, splits) -> None:
    """An image folder that is not there is one problem, not one per image."""
    for split in splits:
        key = f"{split}_images"
        folder = comp.path(getattr(comp, key))
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise PreflightError(f"{comp.root / 'competition.yaml'}: {key}: {folder} {what}")


def preflight(comp: Competition, include_test: bool = True) -> pd.DataFrame:
    """Check the train table and every train (and test) image; raise listing all problems."""
    df = comp.read_train()
    check_folders(comp, ("train", "test") if include_test else ("train",))
    problems = check_train_table(comp, df)
    problems += scan_images(comp, df[comp.id_column], "train", comp.path(comp.train_csv))
    if include_test:
        test = comp.read_test()
        problems += scan_images(comp, test[comp.id_column], "test", comp.path(comp.test_csv or comp.sample_submission))
    if problems:
        shown = "\n  ".join(problems[:50])
        more = ""
        if len(problems) > 50:  # every one is kept: the full list goes to a file beside the data
            listing = cache_dir(comp) / "preflight_problems.txt"
            listing.parent.mkdir(exist_ok=True)
            listing.write_text("\n".join(problems) + "\n")
            more = f"\n  ... and {len(problems) - 50} more; all {len(problems)} are listed in {listing}"
        raise PreflightError(f"pre-flight found {len(problems)} problem(s):\n  {shown}{more}")
    return df
