"""The ledger under faults: created by many processes at once, locked too long, corrupt, or a folder."""
import multiprocessing as mp
import sqlite3
import threading
import time

import pytest

from kit.ledger import Ledger, LedgerError
from tests.helpers import kit


def test_creation_waits_for_a_process_holding_the_new_file(tmp_path):
    # Another process has just created the file and holds its write lock, still in the old journal mode:
    # switching to WAL then failed at once with 'database is locked' (6 of 3,600 racing writers).
    path = tmp_path / "ledger.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    t0 = time.monotonic()
    led = Ledger(path, timeout=10)
    assert time.monotonic() - t0 >= 0.4  # it waited for the lock instead of failing
    assert led.get(led.add({"message": "after the wait"}))["message"] == "after the wait"
    other.close()


def _create_and_add(base, rounds, barrier, errors):
    for r in range(rounds):
        barrier.wait()
        try:
            Ledger(f"{base}/{r}/ledger.db").add({"message": "x"})
        except Exception as e:  # noqa: BLE001 - every failure is counted
            errors.put(repr(e))
    errors.put(None)


def test_twelve_processes_create_the_same_new_ledgers_at_once(tmp_path):
    ctx, n, rounds = mp.get_context("spawn"), 12, 20
    barrier, errors = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_create_and_add, args=(str(tmp_path), rounds, barrier, errors)) for _ in range(n)]
    for p in procs:
        p.start()
    failures, done = [], 0
    while done < n:
        item = errors.get(timeout=300)
        done += item is None
        if item is not None:
            failures.append(item)
    for p in procs:
        p.join()
    assert failures == []
    for r in range(rounds):  # one file per round, every row in it, no temporary file left
        assert len(Ledger(tmp_path / str(r) / "ledger.db").rows()) == n
        assert sorted(p.name for p in (tmp_path / str(r)).iterdir() if not p.name.startswith("ledger.db")) == []


def test_a_lock_held_too_long_is_a_clear_message(tmp_path):
    led = Ledger(tmp_path / "ledger.db", timeout=0.3)
    other = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(LedgerError, match=r"ledger.db: locked by another process for more than 0.3 s"):
        led.add({"message": "blocked"})
    other.execute("ROLLBACK")


@pytest.mark.parametrize("content", [b"this is not sqlite" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_ledger_is_named_by_every_command(tmp_path, content):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "ledger.db").write_bytes(content)
    with pytest.raises(LedgerError, match="ledger.db: not a readable ledger"):
        Ledger(tmp_path / "subs" / "ledger.db")
    r = kit("ledger", f"--out={tmp_path / 'subs'}", check=False)
    assert r.returncode == 1 and "not a readable ledger" in r.stderr and "Traceback" not in r.stderr
