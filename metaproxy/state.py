"""The SQLite state store shared by the CLI, the proxy, the gateway and the migration loop.

One file holds mounts and migration state. It is opened in WAL mode so readers (the proxy
polling for mounts and flips) never block the writer (the migration loop), and with
``synchronous=FULL`` so a committed step survives a crash or power loss: the migration loop
writes the intent of every step before it acts on it and relies on that write being durable.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

BUSY_TIMEOUT_MS = 10_000


def connect(path: str | Path) -> sqlite3.Connection:
    """A raw connection to the state DB with the project's pragmas applied.

    ``isolation_level=None`` leaves transactions to the caller (``BEGIN IMMEDIATE`` … ``COMMIT``),
    which is what optimistic-concurrency updates need.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(p), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False, isolation_level=None
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def open_state(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the state DB as a :class:`sqlite_utils.Database`."""
    return sqlite_utils.Database(connect(path))
