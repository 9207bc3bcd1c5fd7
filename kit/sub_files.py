"""Submission CSVs and their ledger rows become final together.

A CSV is first written as `<name>.csv.<pid>.partial` (checked there), its ledger row is committed, and
only then is it renamed to `<name>.csv`. A kill before the commit leaves a partial file and no row
(removed by the next `kit submit`); a kill after it leaves a row whose CSV is finished on the next
`kit submit`, `kit score` or `kit ledger` (the partial file's sha256 must match the row's).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .folds import file_hash

PARTIAL = ".partial"
STALE_S = 24 * 3600  # a partial file of a process on another machine is removed after a day


def partial_path(final: Path) -> Path:
    """Where the CSV of this process is staged before its row is committed."""
    return final.with_name(f"{final.name}.{os.getpid()}{PARTIAL}")


def publish(partial: Path, final: Path) -> None:
    """Rename the staged CSV into place and make the rename durable."""
    os.replace(partial, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finish_interrupted(ledger, out_dir: Path) -> list[str]:
    """Finish or remove what a killed `kit submit` left in `out_dir`; returns what was done, one line each."""
    out_dir, done = Path(out_dir), []
    partials = sorted(out_dir.glob(f"*.csv.*{PARTIAL}"))
    if not partials:
        return done
    rows = {Path(r["file"]).name: r for r in ledger.rows() if r["file"]}
    for p in partials:
        final_name, _, pid = p.name[: -len(PARTIAL)].rpartition(".")
        final = p.with_name(final_name)
        row = rows.get(final_name)
        if row is not None and not final.exists() and row["sha256"] == file_hash(p):
            publish(p, final)  # the row was committed: the CSV it describes becomes final
            done.append(f"{final}: finished (ledger #{row['id']}; its submit was interrupted)")
        elif row is None and not _alive(pid, p):
            p.unlink(missing_ok=True)  # its submit died before recording it: never a submission
            done.append(f"{p}: removed (its submit was interrupted before the ledger row)")
    return done


def _alive(pid: str, path: Path) -> bool:
    """Whether the process that is writing `path` may still be running (then its file is left alone)."""
    if time.time() - path.stat().st_mtime > STALE_S:
        return False
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
