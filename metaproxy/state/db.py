"""The state database: one SQLite file shared by the CLI, the proxy, the gateway and the
migration loop, and the only code that opens it.

It is opened in WAL mode so readers (the proxy polling for mounts and flips) never block the
writer (the migration loop), and with ``synchronous=FULL`` so a committed step survives a
crash or power loss: the migration loop writes the intent of every step before it acts on it
and relies on that write being durable. Opening a file brings its schema up to date
(:mod:`metaproxy.state.schema`).

One :class:`StateDB` is one connection, shared by the threads of a process: statements and
transactions take turns on a lock, and a transaction is ``BEGIN IMMEDIATE`` … ``COMMIT`` so
two processes never interleave a read-modify-write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metaproxy.state import schema

BUSY_TIMEOUT_MS = 10_000


class StateError(RuntimeError):
    """The state file cannot be used (written by a newer metaproxy, or broken)."""


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


class StateDB:
    """A connection to the state file, with its schema current."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # ``isolation_level=None``: transactions are ours (``tx``), never implicit
        self.conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
        )
        self.conn.row_factory = _dict_row
        self._lock = threading.RLock()
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._upgrade()
        except BaseException:
            self.conn.close()
            raise

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # -- schema -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The number of schema steps applied to this file."""
        rows = self.query("SELECT version FROM schema_version")
        return int(rows[0]["version"]) if rows else 0

    def _upgrade(self) -> None:
        with self.tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            if not c.execute("SELECT version FROM schema_version").fetchall():
                c.execute("INSERT INTO schema_version (version) VALUES (0)")
        have = self.version
        if have > schema.VERSION:
            raise StateError(
                f"{self.path}: the state was written by a newer metaproxy (schema {have}, "
                f"this one knows up to {schema.VERSION}); upgrade metaproxy"
            )
        for number in range(have + 1, schema.VERSION + 1):
            with self._lock:
                script = schema.STEPS[number - 1]
                try:
                    self.conn.executescript(
                        f"BEGIN IMMEDIATE;\n{script}\nUPDATE schema_version SET version = {number};\nCOMMIT;"
                    )
                except sqlite3.Error as e:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise StateError(
                        f"{self.path}: upgrading the state to schema {number} failed: {e}"
                    ) from e

    # -- statements ---------------------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT`` (rolled back on an exception)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of one statement, each a dict of column → value."""
        with self._lock:
            return list(self.conn.execute(sql, params))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement in a transaction of its own; the number of rows it changed."""
        with self.tx() as c:
            return c.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.tx() as c:
            c.executemany(sql, rows)


def open_state(path: str | Path) -> StateDB:
    """Open (creating it if needed) the state file at ``path``."""
    return StateDB(path)
