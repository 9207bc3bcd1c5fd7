"""Several machines, one run: every process must see the same run folder and the same folds.

Rank 0 alone writes the run folder (config, lineage, checkpoints, tables); the other machines read
what it wrote (a checkpoint to resume, the best weights to predict). So the run folder must be on a
disk every machine shares. The data folder may be shared or copied to each machine, as long as
every copy holds the same folds.csv. Both are checked before training, and every process stops
with the same message (a process that stopped alone would leave the others waiting).
"""
from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

PROBE = ".kit_probe"


class NodeLayoutError(RuntimeError):
    """The machines of one run do not see the same files."""


def _gather(acc, item) -> list:
    from accelerate.utils import gather_object
    return gather_object([item])


def _where(views: list) -> str:
    return ", ".join(f"process {rank} on {host}" for rank, host, *_ in views)


def check_run_dir_shared(acc, run_dir: Path, wait_s: float = 5.0) -> None:
    """Stop every process unless all of them see a file rank 0 writes into the run folder."""
    if acc.num_processes == 1:
        return
    from accelerate.utils import broadcast_object_list
    token = broadcast_object_list([uuid.uuid4().hex if acc.is_main_process else None])[0]
    probe = Path(run_dir) / PROBE
    if acc.is_main_process:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    acc.wait_for_everyone()
    deadline = time.monotonic() + wait_s  # a network filesystem may show a new file a moment later
    while not (seen := _reads(probe) == token) and time.monotonic() < deadline:
        time.sleep(0.2)
    views = _gather(acc, (acc.process_index, socket.gethostname(), seen))
    acc.wait_for_everyone()
    if acc.is_main_process:
        probe.unlink(missing_ok=True)
    blind = [v for v in views if not v[2]]
    if blind:
        raise NodeLayoutError(
            f"{run_dir} is not one folder shared by every machine: {_where(blind)} cannot see the file process 0 "
            f"wrote there. Checkpoints, resume and the run's tables are written once, by process 0, and read by "
            f"all: put --out_dir on a disk every machine mounts (NFS, Lustre, a cloud file share).")


def _reads(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def check_same_folds(acc, folds_file: Path) -> None:
    """Stop every process unless each one reads a byte-identical folds.csv (shared or copied data folders)."""
    if acc.num_processes == 1:
        return
    from .folds import file_hash
    digest = file_hash(folds_file) if Path(folds_file).exists() else None
    views = _gather(acc, (acc.process_index, socket.gethostname(), digest))
    main = views[0][2]
    odd = [v for v in views if v[2] != main]
    if odd:
        missing = [v for v in odd if v[2] is None]
        why = "finds no such file, unlike process 0" if len(missing) == len(odd) else "reads other folds than process 0"
        raise NodeLayoutError(
            f"{folds_file}: {_where(odd)} {why}. Every machine must train on the same folds: "
            f"share the data folder, or copy it to every machine after `kit folds` (folds.csv included).")
