"""The SQLite ledger under concurrent writers and a writer killed mid-transaction."""
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from kit.ledger import Ledger
from tests.helpers import ROOT

WRITER = textwrap.dedent("""
    import os, sys, time
    from kit.ledger import Ledger
    db, writer, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    ledger = Ledger(db)
    while not os.path.exists(go):  # start together, so the writers really contend for the lock
        time.sleep(0.001)
    for i in range(n):
        ledger.add({"competition": "c", "message": f"{writer}:{i}", "cv": writer + i / 1000, "target": "manual",
                    "status": "pending", "experiments": [f"w{writer}"]})
""")


def _spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})


def test_eight_processes_fifty_rows_each_none_lost_or_duplicated(tmp_path):
    db, go = tmp_path / "ledger.db", tmp_path / "go"
    procs = [_spawn(WRITER, db, w, 50, go) for w in range(8)]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    con = sqlite3.connect(db)  # read with plain sqlite3, not through the code under test
    rows = con.execute("SELECT id, message, cv FROM submissions").fetchall()
    assert len(rows) == 400
    assert len({r[0] for r in rows}) == 400
    assert sorted(r[1] for r in rows) == sorted(f"{w}:{i}" for w in range(8) for i in range(50))
    assert all(abs(cv - (int(m.split(":")[0]) + int(m.split(":")[1]) / 1000)) < 1e-12 for _, m, cv in rows)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


KILLED = textwrap.dedent("""
    import sys, time
    from kit.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    for i in range(int(sys.argv[2])):
        print(ledger.add({"competition": "c", "message": f"committed {i}", "target": "manual"}), flush=True)
    with ledger.transaction() as con:  # killed while this transaction holds the write lock, half done
        ledger.add({"competition": "c", "message": "never committed", "target": "manual"}, con)
        con.execute("UPDATE submissions SET message='overwritten' WHERE id=1")
        print("in-transaction", flush=True)
        time.sleep(600)
""")


@pytest.mark.parametrize("committed", [0, 7])
def test_writer_killed_mid_transaction_leaves_every_committed_row(tmp_path, committed):
    db = tmp_path / "ledger.db"
    p = _spawn(KILLED, db, committed)
    ids = []
    for line in p.stdout:
        if line.strip() == "in-transaction":
            break
        ids.append(int(line))
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert len(ids) == committed
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = con.execute("SELECT id, message FROM submissions ORDER BY id").fetchall()
    assert rows == [(i, f"committed {k}") for k, i in enumerate(ids)]
    con.close()
    ledger = Ledger(db)  # and the ledger keeps working: the killed writer's lock is gone
    new = ledger.add({"competition": "c", "message": "after the kill", "target": "manual"})
    assert [r["message"] for r in ledger.rows()] == [f"committed {k}" for k in range(committed)] + ["after the kill"]
    assert new == committed + 1  # the rolled-back row did not even use up an id


BUSY = textwrap.dedent("""
    import sys
    from kit.ledger import Ledger
    ledger = Ledger(sys.argv[1])
    i = 0
    while True:  # killed at whatever point of a write it happens to be in
        print(ledger.add({"competition": "c", "message": f"busy {i}", "target": "manual"}), flush=True)
        i += 1
""")


def test_writer_killed_at_full_speed_keeps_every_row_it_reported(tmp_path):
    db = tmp_path / "ledger.db"
    Ledger(db).add({"competition": "c", "message": "before", "target": "manual"})
    p = _spawn(BUSY, db)
    ids = [int(next(p.stdout)) for _ in range(40)]
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(con.execute("SELECT id, message FROM submissions").fetchall())
    assert stored[1] == "before" and all(stored[i] == f"busy {k}" for k, i in enumerate(ids))
    assert sorted(stored) == list(range(1, len(stored) + 1))  # no gaps, no half rows


def test_rows_round_trip_json_and_find_by_id_file_or_sha(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db")
    rid = ledger.add({"competition": "c", "file": "submissions/x_exp.csv", "sha256": "ab" * 32,
                      "experiments": ["ens", "a", "b"], "members": [{"name": "a", "weight": 0.5}],
                      "config": {"lr": 0.001}, "git_dirty": True, "target": "manual", "status": "pending"})
    row = ledger.get(rid)
    assert row["experiments"] == ["ens", "a", "b"] and row["members"] == [{"name": "a", "weight": 0.5}]
    assert row["config"] == {"lr": 0.001} and row["git_dirty"] == 1
    assert ledger.find(str(rid))["id"] == ledger.find("x_exp.csv")["id"] == ledger.find("abababab")["id"] == rid
    with pytest.raises(KeyError, match="no submission matches"):
        ledger.find("nothing_like_it.csv")
    with pytest.raises(KeyError, match="unknown column"):
        ledger.add({"password": "x"})
    with pytest.raises(KeyError, match="no submission with id 99"):
        ledger.update(99, public=0.5)


def test_old_ledger_gains_new_columns_and_keeps_its_rows(tmp_path):
    db = tmp_path / "ledger.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY AUTOINCREMENT, created_utc TEXT NOT NULL, "
                "file TEXT, public REAL)")
    con.execute("INSERT INTO submissions (created_utc, file, public) "
                "VALUES ('2026-01-01T00:00:00+00:00', 'a.csv', 0.7)")
    con.commit()
    con.close()
    ledger = Ledger(db)
    [row] = ledger.rows()
    assert row["file"] == "a.csv" and row["public"] == 0.7 and row["cv"] is None
    ledger.update(row["id"], cv=0.8)
    assert ledger.get(row["id"])["cv"] == 0.8


def test_ledger_table_mixes_rows_with_and_without_a_git_commit(tmp_path):
    from kit.compare import ledger_table
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.add({"competition": "c", "target": "manual", "status": "pending", "experiments": ["a"],
                "git_commit": "0123456789abcdef", "git_dirty": 1})
    ledger.add({"competition": "c", "target": "manual", "status": "pending", "experiments": ["b"]})
    table = ledger_table(ledger)
    assert table.set_index("experiments")["git"].to_dict() == {"a": "01234567*", "b": ""}


def test_ledger_table_shows_the_tta_views_a_submission_kept(tmp_path):
    from kit.compare import format_table, ledger_table
    ledger = Ledger(tmp_path / "ledger.db")
    for name, tta in (("plain", None), ("kept", {"views": ["none", "hflip", "vflip"], "kept": True}),
                      ("dropped", {"views": ["none", "hflip"], "kept": False}), ("seg", {"tta": ["none", "d4"]})):
        ledger.add({"competition": "c", "target": "manual", "status": "pending", "experiments": [name], "tta": tta})
    table = ledger_table(ledger)
    assert table.set_index("experiments")["tta"].to_dict() == {"plain": "", "kept": "hflip+vflip", "dropped": "",
                                                               "seg": "d4"}
    assert "hflip+vflip" in format_table(table)
