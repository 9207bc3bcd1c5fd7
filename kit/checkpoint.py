"""Crash-safe checkpoint folders: written aside, fsynced, renamed into place with a completeness marker.

A checkpoint is a folder `<root>/<name>` holding a `COMPLETE.json` that lists every file with its
size. It is written under `<root>/.tmp-<name>`, every file and folder is fsynced, the marker is
written last, and one `rename` makes it visible: a kill at any moment leaves either the previous
set of complete checkpoints or the previous set plus the new one. Older checkpoints are pruned
only after the new one is complete (Accelerate's `total_limit` deletes first, so it is not used).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import KitError
from .faults import fault_point

MARKER = "COMPLETE.json"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
LOW_SPACE = 1 << 20  # bytes: a failed write with less than this free ran out of space


class CheckpointError(KitError, RuntimeError):
    """A checkpoint could not be written or read; the message says which and what is still safe."""


@dataclass
class Found:
    """A checkpoint folder and why it can or cannot be loaded."""

    path: Path
    meta: dict | None  # the marker's content; None when incomplete
    problem: str = ""  # why it is incomplete

    @property
    def complete(self) -> bool:
        return self.meta is not None


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder bottom-up, so a rename publishes durable data."""
    for dirpath, _, files in os.walk(folder, topdown=False):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(folder: Path) -> None:
    """fsync a folder's entry list (makes a rename or a new file name durable)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_files(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file below `folder` (the marker excluded)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            full = Path(dirpath) / name
            rel = full.relative_to(folder).as_posix()
            if rel != MARKER:
                out[rel] = full.stat().st_size
    return dict(sorted(out.items()))


def inspect_checkpoint(path: Path) -> Found:
    """Read the marker and check every listed file is there with its recorded size."""
    marker = path / MARKER
    if not marker.exists():
        return Found(path, None, "no completeness marker (the write was interrupted)")
    try:
        meta = json.loads(marker.read_text())
        files = meta["files"]
    except (ValueError, KeyError) as e:
        return Found(path, None, f"unreadable marker ({e})")
    for rel, size in files.items():
        f = path / rel
        if not f.exists():
            return Found(path, None, f"{rel} is missing")
        if f.stat().st_size != size:
            return Found(path, None, f"{rel} has {f.stat().st_size} bytes, {size} were written")
    return Found(path, meta)


def list_checkpoints(root: Path) -> list[Found]:
    """Every checkpoint folder under `root`, oldest first (names sort in training order)."""
    if not root.exists():
        return []
    return [inspect_checkpoint(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def newest_complete(root: Path) -> tuple[Found | None, list[Found]]:
    """The newest complete checkpoint, and the newer incomplete ones skipped to reach it."""
    skipped = []
    for found in reversed(list_checkpoints(root)):
        if found.complete:
            return found, skipped
        skipped.append(found)
    return None, skipped


def write_checkpoint(root: Path, name: str, write: Callable[[Path], None], meta: dict,
                     is_main: bool = True, barrier: Callable[[], None] = lambda: None) -> Path:
    """Write a checkpoint with `write(folder)` (every process calls it) and publish it atomically.

    `barrier` synchronises processes (Accelerate's wait_for_everyone); only the main process
    touches the file system outside `write`.
    """
    root = Path(root)
    tmp, final = root / f".tmp-{name}", root / name
    try:
        if is_main:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a kill during an earlier write
            tmp.mkdir()
        barrier()
        write(tmp)
        barrier()
        if is_main:
            fault_point("ckpt_write")  # files written, marker not yet: the worst moment to die
            marker = {**meta, "files": list_files(tmp), "written_at": time.time()}
            with open(tmp / MARKER, "w") as f:
                json.dump(marker, f, indent=1)
            fsync_tree(tmp)
            _publish(tmp, final)
    except Exception as e:  # any failure: torch.save says "unexpected pos", safetensors its own error
        full = out_of_space(e, root)  # asked before the partial folder is removed, while the disk is still full
        release_frames(e)  # the writer's frames hold its open file, and so the space
        if is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if full:
            prev, _ = newest_complete(root)
            kept = f"the previous checkpoint {prev.path} is complete and loadable" if prev else "no earlier checkpoint"
            raise CheckpointError(f"disk full while writing checkpoint {final} ({type(e).__name__}: {e}); the "
                                  f"partial write was removed and nothing else deleted: {kept}. Free space, then "
                                  f"resume.") from e
        raise CheckpointError(f"could not write checkpoint {final} ({type(e).__name__}: {e}); the partial write "
                              f"was removed") from e
    barrier()
    return final


def write_aside(path: Path, write: Callable[[Path], None]) -> None:
    """Write one file through `<path>.tmp` and a rename; any failure removes the temporary file and says why."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except Exception as e:
        full = out_of_space(e, path.parent)
        release_frames(e)
        tmp.unlink(missing_ok=True)
        why = "disk full" if full else "could not write"
        raise CheckpointError(f"{why}: {path} ({type(e).__name__}: {e}); the partial file was removed"
                              f"{', the previous one is intact' if path.exists() else ''}.") from e


def release_frames(error: BaseException) -> None:
    """Drop the locals of the failed call's frames (every exception in the chain): a writer object kept
    alive there keeps its file open, and a deleted but open file still fills the disk."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__


def out_of_space(error: BaseException, folder: Path) -> bool:
    """Whether a write failed for lack of space: ENOSPC/EDQUOT anywhere in the exception chain, a library's
    message saying so, or (torch.save reports only "unexpected pos") almost no space left on the disk."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = str(e)
        if getattr(e, "errno", None) in _NO_SPACE or any(s in text for s in _NO_SPACE_TEXT):
            return True
        e = e.__cause__ or e.__context__
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < LOW_SPACE


def _publish(tmp: Path, final: Path) -> None:
    # A folder already at `final` is an incomplete leftover or a replay of the same state:
    # it moves aside first so the rename below is one atomic step.
    trash = final.with_name(f".trash-{final.name}")
    if final.exists():
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(final, trash)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    shutil.rmtree(trash, ignore_errors=True)


def prune_checkpoints(root: Path, keep: int, protect: set[str] = frozenset()) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints (and `protect`), plus stale temporary folders."""
    found = list_checkpoints(root)
    complete = [f for f in found if f.complete]
    keep_names = {f.path.name for f in complete[-keep:]} | set(protect) if keep > 0 else {f.path.name for f in complete}
    removed = []
    newest = complete[-1].path.name if complete else None
    for f in found:
        # an incomplete folder older than the newest complete one can never be resumed from
        stale = not f.complete and newest is not None and f.path.name < newest
        if (f.complete and f.path.name not in keep_names) or stale:
            shutil.rmtree(f.path, ignore_errors=True)
            removed.append(f.path)
    for p in root.glob(".t*-*"):  # .tmp-/.trash- left by kills; the new checkpoint is already complete
        shutil.rmtree(p, ignore_errors=True)
    return removed
