"""The submission ledger: one SQLite row per submission, with what produced it and how it scored.

WAL journal + a busy timeout let many processes append at once; every write is one short
`BEGIN IMMEDIATE` transaction, so a writer killed at any point leaves every committed row intact.
No credential is ever written here: rows hold file hashes, lineage, scores and messages only.
"""
from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path

from .checkpoint import out_of_space
from .errors import KitError

SCHEMA_VERSION = 1
COLUMNS = {  # name -> SQL type; the order is the table's column order
    "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "created_utc": "TEXT NOT NULL",  # ISO time the row was made (UTC: Kaggle's daily limit resets at 00:00 UTC)
    "competition": "TEXT",  # competition name (competition.yaml name)
    "comp_dir": "TEXT",  # competition folder, to find the test images and the spec again
    "kaggle_slug": "TEXT",  # where the row was (or would be) uploaded
    "file": "TEXT",  # the submission CSV
    "sha256": "TEXT",  # of the CSV bytes: proves which file was scored
    "experiments": "TEXT",  # JSON list of run names (an ensemble lists itself and its members' runs)
    "members": "TEXT",  # JSON: ensemble members and weights, null for a single run
    "git_commit": "TEXT",
    "git_dirty": "INTEGER",  # 1 when the tree had uncommitted changes at training time
    "config": "TEXT",  # JSON of the run's resolved config
    "data_hash": "TEXT",  # train CSV + image manifest
    "folds_hash": "TEXT",
    "cv": "REAL",  # cross-validation score of the run
    "cv_schemes": "TEXT",  # JSON {scheme: CV} when the run scored extra validation views (--valid_schemes)
    "cv_folds": "TEXT",  # 'all' or the folds the CV covers ('0' for a one-fold smoke run)
    "metric": "TEXT",
    "tta": "TEXT",  # JSON of runs/<exp>/predict.json when test-time augmentation was used
    "pseudo": "TEXT",  # JSON of a pseudo-label round: parent run, round, threshold, rows (per class)
    "message": "TEXT",
    "target": "TEXT",  # local | kaggle | kaggle-code (a pushed notebook) | manual
    "status": "TEXT",  # pending | uploading | scored | failed | error
    "public": "REAL",
    "private": "REAL",
    "kaggle_ref": "INTEGER",  # Kaggle's submission id, used by `kit sync`
    "kaggle_dataset": "TEXT",  # kaggle-code: the package dataset as owner/slug@v<version>
    "kaggle_kernel": "TEXT",  # kaggle-code: the notebook as owner/slug@v<version>
    "error": "TEXT",  # why an upload or a scoring failed, as Kaggle answered it
    "scored_utc": "TEXT",
}


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class LedgerError(KitError):
    """The ledger file cannot be used: locked too long, or not a SQLite ledger; the message names the file."""


class Ledger:
    """The ledger file; open it where it is, create it on first write."""

    def __init__(self, path: str | Path = "submissions/ledger.db", timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout
        if self.path.is_dir():
            raise LedgerError(f"{self.path}: is a folder, not a ledger file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._errors():
            if not self.path.exists():
                self._create()
            con = self._connect()
            try:
                if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # a ledger made elsewhere
                    self._retry(lambda: con.execute("PRAGMA journal_mode=WAL"))  # persistent: set once per file
                self._migrate(con)
            finally:
                con.close()

    def _create(self) -> None:
        """Make the file complete (WAL mode, table) under a private name, then link it into place.

        Switching a shared new file to WAL races: a second process that opened it in the old journal
        mode gets 'database is locked' at once, without waiting. A link either wins or finds the file there.
        """
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".new")
        os.close(fd)
        try:
            con = sqlite3.connect(tmp, isolation_level=None)
            try:
                con.execute("PRAGMA journal_mode=WAL")
                self._migrate(con)
            finally:
                con.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            except OSError:
                pass  # no hard links on this file system: created in place below, the WAL switch retried
        finally:
            for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
                with suppress(FileNotFoundError):
                    os.unlink(leftover)

    def _retry(self, step):
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return step()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _errors(self):
        """SQLite's terse errors as messages that name the file and what to do."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise LedgerError(f"{self.path}: locked by another process for more than {self.timeout:g} s "
                                  f"(another kit submit or sync still running?); try again") from None
            if out_of_space(e, self.path.parent):  # SQLite says "disk I/O error" or "database or disk is full"
                raise LedgerError(f"{self.path}: disk full ({e}); nothing was recorded. Free space, then run the "
                                  f"command again") from None
            raise LedgerError(f"{self.path}: {e}") from None
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            raise LedgerError(f"{self.path}: not a readable ledger ({e}); move it aside and `kit submit` starts a "
                              f"new one (the CSVs in {self.path.parent} are kept)") from None

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        con.row_factory = sqlite3.Row
        con.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        con.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut, not just a kill
        return con

    def _migrate(self, con: sqlite3.Connection) -> None:
        have = {r[1] for r in con.execute("PRAGMA table_info(submissions)")}
        if set(COLUMNS) <= have:  # nothing to do: no write lock taken
            return
        con.execute("BEGIN IMMEDIATE")
        try:
            cols = ", ".join(f"{k} {v}" for k, v in COLUMNS.items())
            con.execute(f"CREATE TABLE IF NOT EXISTS submissions ({cols})")
            have = {r[1] for r in con.execute("PRAGMA table_info(submissions)")}
            for name, kind in COLUMNS.items():  # columns added by later versions
                if name not in have:
                    con.execute(f"ALTER TABLE submissions ADD COLUMN {name} {kind}")
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    @contextmanager
    def transaction(self):
        """A write transaction that takes the lock up front (no deadlock between readers turned writers)."""
        with self._errors():
            con = self._connect()
            try:
                con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:  # SQLite may have rolled back itself (disk full): keep the real error
                        with suppress(sqlite3.Error):
                            con.execute("ROLLBACK")
                    raise
            finally:
                con.close()

    def add(self, row: dict, con: sqlite3.Connection | None = None) -> int:
        """Insert one submission row (unknown keys are an error); returns its id."""
        row = {"created_utc": utc_now(), **row}
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"ledger: unknown column(s) {sorted(unknown)}")
        values = {k: _to_sql(v) for k, v in row.items()}
        sql = f"INSERT INTO submissions ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})"
        if con is not None:
            return con.execute(sql, list(values.values())).lastrowid
        with self.transaction() as c:
            return c.execute(sql, list(values.values())).lastrowid

    def update(self, row_id: int, **changes) -> None:
        """Change some fields of one row (scores, status, Kaggle's answer)."""
        unknown = set(changes) - set(COLUMNS) | ({"id"} & set(changes))
        if unknown:
            raise KeyError(f"ledger: cannot set column(s) {sorted(unknown)}")
        sets = ", ".join(f"{k}=?" for k in changes)
        with self.transaction() as con:
            cur = con.execute(f"UPDATE submissions SET {sets} WHERE id=?",
                              [_to_sql(v) for v in changes.values()] + [row_id])
            if cur.rowcount != 1:
                raise KeyError(f"ledger {self.path}: no submission with id {row_id}")

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        """Rows as dicts, oldest first (JSON columns decoded)."""
        with self._errors():
            con = self._connect()
            try:
                sql = "SELECT * FROM submissions" + (f" WHERE {where}" if where else "") + " ORDER BY id"
                return [_from_sql(dict(r)) for r in con.execute(sql, params)]
            finally:
                con.close()

    def get(self, row_id: int) -> dict:
        """One row by id."""
        found = self.rows("id=?", (int(row_id),))
        if not found:
            raise KeyError(f"ledger {self.path}: no submission with id {row_id}")
        return found[0]

    def find(self, ref: str | int) -> dict:
        """A row by id, CSV path/name or sha256 prefix (what a user types after `kit score`)."""
        text = str(ref)
        if text.isdigit() and len(text) < 12:
            return self.get(int(text))
        name = Path(text).name
        hits = [r for r in self.rows() if r["file"] and (Path(r["file"]).name == name or r["file"] == text)]
        if not hits and len(text) >= 8:
            hits = [r for r in self.rows() if (r["sha256"] or "").startswith(text.lower())]
        if not hits:
            raise KeyError(f"ledger {self.path}: no submission matches {text!r} (id, file name or sha256 prefix)")
        return hits[-1]

    def count_today(self, slug: str, con: sqlite3.Connection | None = None) -> int:
        """Kaggle uploads to competition `slug` since 00:00 UTC today that Kaggle may have counted."""
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        sql = ("SELECT COUNT(*) FROM submissions WHERE kaggle_slug=? AND (target='kaggle' OR kaggle_ref IS NOT NULL)"
               " AND substr(created_utc,1,10)=? AND status != 'failed'")
        if con is not None:
            return con.execute(sql, (slug, day)).fetchone()[0]
        c = self._connect()
        try:
            return c.execute(sql, (slug, day)).fetchone()[0]
        finally:
            c.close()


JSON_COLUMNS = ("experiments", "members", "config", "tta", "pseudo", "cv_schemes")


def _to_sql(value):
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, bool):
        return int(value)
    return value


def _from_sql(row: dict) -> dict:
    for k in JSON_COLUMNS:
        if row.get(k):
            try:
                row[k] = json.loads(row[k])
            except json.JSONDecodeError:
                pass
    return row
