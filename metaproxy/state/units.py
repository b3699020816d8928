"""The migration journal: units, their files and attempts, events, and the flips.

Every step writes its intent (the unit's new state) *before* it acts, in a transaction of
its own, so a process killed at any point restarts from a state that says what may have
been half done:

``qualified`` → ``copying`` (attempt N, a fresh destination prefix) → ``verified`` →
``flipped`` (the flip row and the state in one transaction) → ``removing`` → ``removed``.
``failed`` units are retried with backoff from the state they failed in
(:attr:`Unit.resume_state`); ``skipped`` ones did not meet their conditions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from metaproxy.state.db import StateDB


class UnitState(StrEnum):
    QUALIFIED = "qualified"
    COPYING = "copying"
    VERIFIED = "verified"
    FLIPPED = "flipped"
    REMOVING = "removing"
    REMOVED = "removed"
    FAILED = "failed"
    SKIPPED = "skipped"


#: states of a unit whose move has begun and must be driven on even when its policy's
#: listing no longer shows it (written back to S3, say)
UNDER_WAY = frozenset(
    {UnitState.COPYING, UnitState.VERIFIED, UnitState.FLIPPED, UnitState.REMOVING, UnitState.FAILED}
)


class FileState(StrEnum):
    PLANNED = "planned"
    COPIED = "copied"
    VERIFIED = "verified"


@dataclass(frozen=True)
class Unit:
    """What migrates atomically — an unpartitioned table, or one partition — and how far it is."""

    id: int
    policy: str
    db: str
    tbl: str
    part: str  #: partition name, '' for an unpartitioned table
    source: str  #: the unit's location on the source UFS, as the HMS has it
    state: UnitState
    attempt: int
    dest: str  #: this attempt's destination prefix
    files: int
    bytes: int
    copied_bytes: int
    failures: int
    next_try: float
    last_error: str  #: why it failed, or why it waits (shown by ``policy status``)
    resume_state: UnitState | None  #: where a failed unit resumes
    copy_seconds: float
    updated: float
    flipped_at: float | None
    written_back: bool  #: the on-prem HMS holds ``dest`` ([migrate] write_back_to_hms)
    removed_at: float | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Unit:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["state"] = UnitState(values["state"])
        values["resume_state"] = UnitState(values["resume_state"]) if values["resume_state"] else None
        values["written_back"] = bool(values["written_back"])
        return cls(**values)

    @property
    def name(self) -> str:
        """``db.table`` or ``db.table partition``, for messages."""
        return f"{self.db}.{self.tbl} {self.part}".strip()


@dataclass(frozen=True)
class UnitFile:
    """One file of one attempt of a unit."""

    rel: str  #: path below the unit's source location
    length: int
    mtime_ms: int
    sha256: str
    state: FileState


#: columns a caller may set along with a state change
_SETTABLE = frozenset(
    {"last_error", "resume_state", "failures", "next_try", "removed_at", "copy_seconds", "dest", "attempt"}
)


class MigrationStore:
    """Typed access to the migration tables, each change in its own durable transaction."""

    def __init__(self, db: StateDB) -> None:
        self.db = db

    def event(self, unit_id: int | None, kind: str, detail: str = "", conn: Any = None) -> None:
        sql = "INSERT INTO events (ts, unit_id, kind, detail) VALUES (?, ?, ?, ?)"
        args = [time.time(), unit_id, kind, detail]
        if conn is not None:
            conn.execute(sql, args)
        else:
            self.db.execute(sql, args)

    # -- units ------------------------------------------------------------------------------

    def upsert_unit(self, policy: str, db: str, tbl: str, part: str, source: str) -> Unit:
        with self.db.tx() as c:
            row = c.execute(
                "SELECT * FROM units WHERE policy = ? AND source = ?", [policy, source]
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO units (policy, db, tbl, part, source, state, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [policy, db, tbl, part, source, UnitState.QUALIFIED, time.time()],
                )
                row = c.execute(
                    "SELECT * FROM units WHERE policy = ? AND source = ?", [policy, source]
                ).fetchone()
                self.event(row["id"], "discovered", f"{db}.{tbl} {part}".strip(), c)
        return Unit.of(row)

    def unit(self, unit_id: int) -> Unit:
        return Unit.of(self.db.query("SELECT * FROM units WHERE id = ?", [unit_id])[0])

    def units(self, policy: str | None = None) -> list[Unit]:
        if policy is None:
            rows = self.db.query("SELECT * FROM units ORDER BY id")
        else:
            rows = self.db.query("SELECT * FROM units WHERE policy = ? ORDER BY id", [policy])
        return [Unit.of(r) for r in rows]

    def set_state(self, unit_id: int, state: UnitState, event: str = "", **columns: Any) -> Unit:
        """Move a unit to ``state`` (and set the given columns) in one transaction."""
        state = UnitState(state)
        unknown = set(columns) - _SETTABLE
        if unknown:
            raise ValueError(f"not a column a state change sets: {sorted(unknown)}")
        if "resume_state" in columns and columns["resume_state"] is None:
            columns["resume_state"] = ""
        sets = "".join(f", {k} = ?" for k in columns)
        with self.db.tx() as c:
            c.execute(
                f"UPDATE units SET state = ?, updated = ?{sets} WHERE id = ?",
                [state, time.time(), *columns.values(), unit_id],
            )
            self.event(unit_id, event or state, "", c)
        return self.unit(unit_id)

    def start_attempt(
        self, unit_id: int, dest_for: Callable[[Unit, int], str], files: list[tuple[str, int, int]]
    ) -> Unit:
        """A new attempt: its destination prefix and the source files it must copy, recorded
        before any byte moves."""
        with self.db.tx() as c:
            u = Unit.of(c.execute("SELECT * FROM units WHERE id = ?", [unit_id]).fetchone())
            attempt = u.attempt + 1
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
                "UPDATE units SET state = ?, attempt = ?, dest = ?, files = ?, bytes = ?, copied_bytes = 0,"
                " updated = ? WHERE id = ?",
                [
                    UnitState.COPYING,
                    attempt,
                    dest,
                    len(files),
                    sum(f[1] for f in files),
                    time.time(),
                    unit_id,
                ],
            )
            self.event(unit_id, "copying", f"attempt {attempt} → {dest}", c)
        return self.unit(unit_id)

    def files(self, unit_id: int, attempt: int) -> list[UnitFile]:
        rows = self.db.query(
            "SELECT * FROM files WHERE unit_id = ? AND attempt = ? ORDER BY rel", [unit_id, attempt]
        )
        return [
            UnitFile(r["rel"], r["length"], r["mtime_ms"], r["sha256"], FileState(r["state"])) for r in rows
        ]

    def file_done(
        self, unit_id: int, attempt: int, rel: str, state: FileState, sha256: str, length: int
    ) -> None:
        with self.db.tx() as c:
            c.execute(
                "UPDATE files SET state = ?, sha256 = ? WHERE unit_id = ? AND attempt = ? AND rel = ?",
                [FileState(state), sha256, unit_id, attempt, rel],
            )
            if state == FileState.COPIED:
                c.execute(
                    "UPDATE units SET copied_bytes = copied_bytes + ?, updated = ? WHERE id = ?",
                    [length, time.time(), unit_id],
                )

    def copy_again(self, unit_id: int, attempt: int, rel: str, length: int, why: str) -> None:
        """The copy of a file is not the source's bytes (``why``): it goes back to planned, its
        bytes no longer count as copied, and the next try copies it again."""
        with self.db.tx() as c:
            n = c.execute(
                "UPDATE files SET state = ?, sha256 = '' WHERE unit_id = ? AND attempt = ? AND rel = ?"
                " AND state = ?",
                [FileState.PLANNED, unit_id, attempt, rel, FileState.COPIED],
            ).rowcount
            if n:
                c.execute(
                    "UPDATE units SET copied_bytes = copied_bytes - ?, updated = ? WHERE id = ?",
                    [length, time.time(), unit_id],
                )
                self.event(unit_id, "copy-again", f"{rel}: {why}", c)

    def flip(self, unit_id: int, source: str, target: str) -> Unit:
        """The flip: the proxy serves ``target`` for ``source`` from the moment this commits."""
        with self.db.tx() as c:
            u = c.execute("SELECT state FROM units WHERE id = ?", [unit_id]).fetchone()
            if u["state"] != UnitState.VERIFIED:
                raise RuntimeError(f"unit {unit_id} is {u['state']}, not verified: not flipping")
            c.execute(
                "INSERT OR REPLACE INTO flips (source, target, unit_id, flipped_at) VALUES (?, ?, ?, ?)",
                [source, target, unit_id, time.time()],
            )
            c.execute(
                "UPDATE units SET state = ?, flipped_at = ?, updated = ? WHERE id = ?",
                [UnitState.FLIPPED, time.time(), time.time(), unit_id],
            )
            self.event(unit_id, "flipped", f"{source} → {target}", c)
        return self.unit(unit_id)

    def mark_written_back(self, unit_id: int, location: str) -> Unit:
        with self.db.tx() as c:
            c.execute("UPDATE units SET written_back = 1, updated = ? WHERE id = ?", [time.time(), unit_id])
            self.event(unit_id, "written-back", location, c)
        return self.unit(unit_id)

    def note(self, unit_id: int, message: str) -> None:
        """Record why a unit waits (shown by ``policy status``), once per distinct message."""
        with self.db.tx() as c:
            row = c.execute("SELECT last_error FROM units WHERE id = ?", [unit_id]).fetchone()
            if row["last_error"] != message:
                c.execute(
                    "UPDATE units SET last_error = ?, updated = ? WHERE id = ?",
                    [message, time.time(), unit_id],
                )
                self.event(unit_id, "held", message, c)

    # -- attempts ---------------------------------------------------------------------------

    def stale_attempts(self) -> list[dict[str, Any]]:
        """Destinations of attempts that are not their unit's current one, not yet cleaned."""
        return self.db.query(
            "SELECT a.* FROM attempts a JOIN units u ON u.id = a.unit_id WHERE a.cleaned = 0 AND a.attempt <> u.attempt"
        )

    def attempt_cleaned(self, unit_id: int, attempt: int) -> None:
        self.db.execute(
            "UPDATE attempts SET cleaned = 1 WHERE unit_id = ? AND attempt = ?", [unit_id, attempt]
        )

    def current_dests(self) -> set[str]:
        return {r["dest"] for r in self.db.query("SELECT dest FROM units WHERE dest <> ''")}

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.db.query("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit])


def load_flips(db: StateDB) -> dict[str, str]:
    """``source → target`` for every flipped unit: what the proxy serves instead."""
    return {r["source"]: r["target"] for r in db.query("SELECT source, target FROM flips")}
