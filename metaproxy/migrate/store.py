"""The migration loop's state in SQLite: units, files, events and flips.

Every step writes its intent (the unit's new state) *before* it acts, in a transaction of
its own, so a process killed at any point restarts from a state that says what may have
been half done:

``qualified`` → ``copying`` (attempt N, a fresh destination prefix) → ``verified`` →
``flipped`` (the flip row and the state in one transaction) → ``removing`` → ``removed``.
``failed`` units are retried with backoff; ``skipped`` ones did not meet their conditions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from metaproxy.state import connect

STATES = ("qualified", "copying", "verified", "flipped", "removing", "removed", "failed", "skipped")

SCHEMA = """
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL,
    db TEXT NOT NULL,
    tbl TEXT NOT NULL,
    part TEXT NOT NULL,            -- partition name, '' for an unpartitioned table
    source TEXT NOT NULL,          -- the unit's location on the source UFS (as the HMS has it)
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    dest TEXT NOT NULL DEFAULT '', -- this attempt's destination prefix
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    copied_bytes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    copy_seconds REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    flipped_at REAL,
    written_back INTEGER NOT NULL DEFAULT 0, -- the on-prem HMS holds ``dest`` ([migrate] write_back_to_hms)
    removed_at REAL,
    UNIQUE (policy, source)
);
CREATE TABLE IF NOT EXISTS files (
    unit_id INTEGER NOT NULL REFERENCES units(id),
    attempt INTEGER NOT NULL,
    rel TEXT NOT NULL,
    length INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'planned',   -- planned | copied | verified
    PRIMARY KEY (unit_id, attempt, rel)
);
CREATE TABLE IF NOT EXISTS attempts (
    unit_id INTEGER NOT NULL REFERENCES units(id),
    attempt INTEGER NOT NULL,
    dest TEXT NOT NULL,
    started REAL NOT NULL,
    cleaned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, attempt)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    unit_id INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS flips (
    source TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    unit_id INTEGER NOT NULL,
    flipped_at REAL NOT NULL
);
"""


class MigrationStore:
    """Typed access to the migration tables, each change in its own durable transaction."""

    def __init__(self, path: str | Path) -> None:
        self.conn = connect(path)
        self._lock = threading.RLock()
        self.conn.row_factory = _dict_row
        self.conn.executescript(SCHEMA)
        self.db = sqlite_utils.Database(self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on an exception). One connection is
        shared by the threads copying a unit's files, so transactions take turns."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.conn.execute(sql, params or []))

    def event(self, unit_id: int | None, kind: str, detail: str = "", conn: Any = None) -> None:
        with self._lock:
            (conn or self.conn).execute(
                "INSERT INTO events (ts, unit_id, kind, detail) VALUES (?, ?, ?, ?)",
                [time.time(), unit_id, kind, detail],
            )

    # -- units ------------------------------------------------------------------------------

    def upsert_unit(self, policy: str, db: str, tbl: str, part: str, source: str) -> dict[str, Any]:
        with self.tx() as c:
            row = c.execute(
                "SELECT * FROM units WHERE policy = ? AND source = ?", [policy, source]
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO units (policy, db, tbl, part, source, state, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [policy, db, tbl, part, source, "qualified", time.time()],
                )
                row = c.execute(
                    "SELECT * FROM units WHERE policy = ? AND source = ?", [policy, source]
                ).fetchone()
                self.event(row["id"], "discovered", f"{db}.{tbl} {part}".strip(), c)
        return dict(row)

    def unit(self, unit_id: int) -> dict[str, Any]:
        return self.query("SELECT * FROM units WHERE id = ?", [unit_id])[0]

    def units(self, policy: str | None = None) -> list[dict[str, Any]]:
        if policy is None:
            return self.query("SELECT * FROM units ORDER BY id")
        return self.query("SELECT * FROM units WHERE policy = ? ORDER BY id", [policy])

    def set_state(self, unit_id: int, state: str, event: str = "", **fields: Any) -> None:
        assert state in STATES, state
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(
                f"UPDATE units SET state = ?, updated = ?{', ' + cols if cols else ''} WHERE id = ?",
                [state, time.time(), *fields.values(), unit_id],
            )
            self.event(unit_id, event or state, "", c)

    def start_attempt(self, unit_id: int, dest_for: Any, files: list[tuple[str, int, int]]) -> dict[str, Any]:
        """A new attempt: its destination prefix and the source files it must copy, recorded
        before any byte moves."""
        with self.tx() as c:
            u = c.execute("SELECT * FROM units WHERE id = ?", [unit_id]).fetchone()
            attempt = int(u["attempt"]) + 1
            dest = str(dest_for(u, attempt))
            c.execute(
                "INSERT INTO attempts (unit_id, attempt, dest, started) VALUES (?, ?, ?, ?)",
                [unit_id, attempt, dest, time.time()],
            )
            c.executemany(
                "INSERT INTO files (unit_id, attempt, rel, length, mtime_ms) VALUES (?, ?, ?, ?, ?)",
                [(unit_id, attempt, rel, length, mtime) for rel, length, mtime in files],
            )
            c.execute(
                "UPDATE units SET state = 'copying', attempt = ?, dest = ?, files = ?, bytes = ?, copied_bytes = 0,"
                " updated = ? WHERE id = ?",
                [attempt, dest, len(files), sum(f[1] for f in files), time.time(), unit_id],
            )
            self.event(unit_id, "copying", f"attempt {attempt} → {dest}", c)
        return self.unit(unit_id)

    def files(self, unit_id: int, attempt: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM files WHERE unit_id = ? AND attempt = ? ORDER BY rel", [unit_id, attempt]
        )

    def file_done(self, unit_id: int, attempt: int, rel: str, state: str, sha256: str, length: int) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE files SET state = ?, sha256 = ? WHERE unit_id = ? AND attempt = ? AND rel = ?",
                [state, sha256, unit_id, attempt, rel],
            )
            if state == "copied":
                c.execute(
                    "UPDATE units SET copied_bytes = copied_bytes + ?, updated = ? WHERE id = ?",
                    [length, time.time(), unit_id],
                )

    def flip(self, unit_id: int, source: str, target: str) -> None:
        """The flip: the proxy serves ``target`` for ``source`` from the moment this commits."""
        with self.tx() as c:
            u = c.execute("SELECT state FROM units WHERE id = ?", [unit_id]).fetchone()
            if u["state"] != "verified":
                raise RuntimeError(f"unit {unit_id} is {u['state']}, not verified: not flipping")
            c.execute(
                "INSERT OR REPLACE INTO flips (source, target, unit_id, flipped_at) VALUES (?, ?, ?, ?)",
                [source, target, unit_id, time.time()],
            )
            c.execute(
                "UPDATE units SET state = 'flipped', flipped_at = ?, updated = ? WHERE id = ?",
                [time.time(), time.time(), unit_id],
            )
            self.event(unit_id, "flipped", f"{source} → {target}", c)

    def mark_written_back(self, unit_id: int, location: str) -> None:
        with self.tx() as c:
            c.execute("UPDATE units SET written_back = 1, updated = ? WHERE id = ?", [time.time(), unit_id])
            self.event(unit_id, "written-back", location, c)

    def note(self, unit_id: int, message: str) -> None:
        """Record why a unit waits (shown by ``policy status``), once per distinct message."""
        with self.tx() as c:
            row = c.execute("SELECT last_error FROM units WHERE id = ?", [unit_id]).fetchone()
            if row["last_error"] != message:
                c.execute(
                    "UPDATE units SET last_error = ?, updated = ? WHERE id = ?",
                    [message, time.time(), unit_id],
                )
                self.event(unit_id, "held", message, c)

    def stale_attempts(self) -> list[dict[str, Any]]:
        """Destinations of attempts that are not their unit's current one, not yet cleaned."""
        return self.query(
            "SELECT a.* FROM attempts a JOIN units u ON u.id = a.unit_id WHERE a.cleaned = 0 AND a.attempt <> u.attempt"
        )

    def attempt_cleaned(self, unit_id: int, attempt: int) -> None:
        with self.tx() as c:
            c.execute("UPDATE attempts SET cleaned = 1 WHERE unit_id = ? AND attempt = ?", [unit_id, attempt])

    def current_dests(self) -> set[str]:
        return {r["dest"] for r in self.query("SELECT dest FROM units WHERE dest <> ''")}

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit])


def _dict_row(cursor: Any, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}
