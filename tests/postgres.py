"""A throw-away PostgreSQL server for tests: Debian's `postgresql` binaries, a cluster in a temp dir, localhost only."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import _free_port


def postgres_bin() -> Path | None:
    """The newest installed server's bin folder (Debian keeps it off PATH), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


@contextmanager
def postgres_server():
    """Start a fresh cluster on a free port; yield its URL (user kit, database postgres); stop and delete it."""
    bindir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="kit-pg-"))
    # the server refuses to run as root: the cluster belongs to the postgres user then
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()

    def run(*cmd: str) -> None:
        r = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120, cwd=root)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "kit", "--auth=trust", "--no-sync")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w", "-t", "60",
            "start")
        yield f"postgresql://kit@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, cwd=root)
        time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)
