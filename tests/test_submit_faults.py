"""`kit submit` killed or out of space at every step: a CSV is final only with its ledger row, and a pending
local row can be scored again."""
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from kit import cli
from kit.ledger import Ledger
from tests.helpers import BIN
from tests.run_factory import make_run


def _submit(runs, out):
    """`kit submit` in this process; returns the error message it exits with, or None."""
    try:
        cli.main(["submit", "exp", "-m", "try", f"--runs={runs}", f"--out={out}"])
    except SystemExit as e:
        return str(e.code)
    return None


def _killed_submit(runs, out, fault):
    """`kit submit` in a process SIGKILLed at `fault`."""
    env = {**os.environ, "WANDB_MODE": "offline", "KIT_FAULT": fault}
    r = subprocess.run([str(BIN / "kit"), "submit", "exp", f"--runs={runs}", f"--out={out}", "-m", "try"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "fault: SIGKILL" in r.stderr, r.stderr[-2000:]


def _consistent(out):
    """Every final CSV has exactly one row with its sha256, and every row's CSV is there."""
    rows = Ledger(out / "ledger.db").rows() if (out / "ledger.db").exists() else []
    csvs = sorted(out.glob("*.csv"))
    assert sorted(r["file"] for r in rows) == [str(p) for p in csvs]
    for r in rows:
        assert hashlib.sha256(Path(r["file"]).read_bytes()).hexdigest() == r["sha256"]
    return rows


@pytest.fixture
def run_dirs(demo_copy, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "subs"
    make_run(runs, demo_copy, "exp", 0.7, seed=1, cv=0.7)
    return runs, out


@pytest.mark.parametrize("fault", ["submit_row:1", "submit_publish:1", "submit_score:1"])
def test_kill_at_each_step_leaves_no_orphan_and_the_next_submit_repairs(run_dirs, fault):
    runs, out = run_dirs
    assert _submit(runs, out) is None  # one good submission first: it must survive everything below
    _killed_submit(runs, out, fault)
    leftovers = sorted(p.name for p in out.glob("*.partial"))
    rows = Ledger(out / "ledger.db").rows()
    if fault == "submit_row:1":  # killed before the row: no row, no final CSV, only a staged file
        assert len(rows) == 1 and len(leftovers) == 1 and len(list(out.glob("*.csv"))) == 1
    elif fault == "submit_publish:1":  # row committed, CSV not yet renamed
        assert len(rows) == 2 and len(leftovers) == 1 and not os.path.exists(rows[-1]["file"])
    else:  # CSV and row final, the local score never written
        assert len(rows) == 2 and rows[-1]["status"] == "pending" and not leftovers
    if fault != "submit_row:1":  # `kit score <id>` scores a pending local row again (finishing its CSV first)
        cli.main(["score", str(rows[-1]["id"]), f"--out={out}"])
        assert Ledger(out / "ledger.db").get(rows[-1]["id"])["status"] == "scored"
    assert _submit(runs, out) is None  # the next submit finishes or removes what the kill left
    rows = _consistent(out)
    assert not list(out.glob("*.partial"))
    assert len(rows) == (2 if fault == "submit_row:1" else 3)
    assert all(r["status"] == "scored" for r in rows)


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip()})")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(folder, leave: int):
    """Fill the file system of `folder` until `leave` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave, 0))


@pytest.mark.parametrize("leave", [4096, 52_000])
def test_disk_full_during_submit_leaves_neither_csv_nor_row_and_names_the_error(run_dirs, tiny_fs, leave):
    runs, _ = run_dirs
    out = tiny_fs / "subs"
    assert _submit(runs, out) is None  # a ledger with one row
    _fill(tiny_fs, leave)  # 4 kB: the ledger cannot even open; 52 kB: the CSV is staged, the row does not fit
    msg = _submit(runs, out)
    (tiny_fs / "filler").unlink()
    assert msg is not None and "cannot rollback" not in msg
    assert "No space left" in msg or "disk full" in msg, msg
    assert len(_consistent(out)) == 1 and not list(out.glob("*.partial"))
