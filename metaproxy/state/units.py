"""The migration journal: units, their files and attempts, events, and the flips.

Every step writes its intent (the unit's new state) *before* it acts, in a transaction of
its own, so a process killed at any point restarts from a state that says what may have
been half done:

``qualified`` → ``copying`` (attempt N, a fresh destination prefix) → ``verified`` →
``flipped`` (the flip row and the state in one transaction) → ``removing`` → ``removed``.
``failed`` units are retried with backoff from the state they failed in
(:attr:`Unit.resume_state`); ``skipped`` ones did not meet their conditions.

Several migration loops may share one policy's units: a loop drives a unit only while it holds
its *lease* (``units.owner`` and ``units.lease_until``). Every change a loop makes to a unit
renews the lease in the same transaction, and fails with :class:`LeaseLost` if another loop
has taken the unit over since — so a loop that stalled past its lease (or was killed) can never
flip or remove what another loop now drives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from metaproxy.state.db import StateDB, Tx


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
    owner: str  #: the migration loop holding the unit's lease ('' when none)
    lease_until: float  #: until when that lease holds (wall clock)

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
    copies: int = 0  #: how many times it was copied


#: columns a caller may set along with a state change
_SETTABLE = frozenset(
    {"last_error", "resume_state", "failures", "next_try", "removed_at", "copy_seconds", "dest", "attempt"}
)


class LeaseLost(RuntimeError):
    """Another migration loop took the unit over (this loop's lease had expired)."""


class MigrationStore:
    """Typed access to the migration tables, each change in its own durable transaction.

    With an ``owner`` (a migration loop), every change to a unit checks and renews that owner's
    lease on it for ``lease_s`` seconds; without one (the CLI, reports) changes are not fenced.
    """

    def __init__(self, db: StateDB, owner: str = "", lease_s: float = 60.0) -> None:
        self.db = db
        self.owner = owner
        self.lease_s = lease_s

    def event(self, unit_id: int | None, kind: str, detail: str = "", conn: Tx | None = None) -> None:
        sql = "INSERT INTO events (ts, unit_id, kind, detail) VALUES (:ts, :unit, :kind, :detail)"
        args = {"ts": time.time(), "unit": unit_id, "kind": kind, "detail": detail}
        if conn is not None:
            conn.execute(sql, args)
        else:
            self.db.execute(sql, args)

    # -- leases -----------------------------------------------------------------------------

    def claim(self, unit_id: int, dead: str = "") -> Unit | None:
        """Take (or renew) this owner's lease on a unit; None while another loop's holds. A lease
        held by ``dead`` (a loop known to be gone) is taken at once."""
        now = time.time()
        with self.db.tx() as c:
            n = c.execute(
                "UPDATE units SET owner = :me, lease_until = :until WHERE id = :id"
                " AND (owner = :me OR owner = '' OR lease_until < :now OR owner = :dead)",
                {
                    "me": self.owner,
                    "until": now + self.lease_s,
                    "id": unit_id,
                    "now": now,
                    "dead": dead or "-",
                },
            ).rowcount
        return self.unit(unit_id) if n else None

    def release(self, unit_id: int) -> None:
        """Give up this owner's lease on a unit (nothing if it holds none)."""
        self.db.execute(
            "UPDATE units SET owner = '', lease_until = 0 WHERE id = :id AND owner = :me",
            {"id": unit_id, "me": self.owner},
        )

    def renew(self, unit_ids: list[int]) -> list[int]:
        """Extend this owner's leases on the given units; the ones it no longer holds."""
        lost = []
        with self.db.tx() as c:
            for uid in unit_ids:
                n = c.execute(
                    "UPDATE units SET lease_until = :until WHERE id = :id AND owner = :me",
                    {"until": time.time() + self.lease_s, "id": uid, "me": self.owner},
                ).rowcount
                if not n:
                    lost.append(uid)
        return lost

    def _hold(self, c: Tx, unit_id: int) -> None:
        """Inside a change to a unit: renew this owner's lease, or fail if it lost it."""
        if not self.owner:
            return
        n = c.execute(
            "UPDATE units SET lease_until = :until WHERE id = :id AND owner = :me",
            {"until": time.time() + self.lease_s, "id": unit_id, "me": self.owner},
        ).rowcount
        if not n:
            row = c.execute("SELECT owner FROM units WHERE id = :id", {"id": unit_id}).fetchone()
            holder = (row or {}).get("owner") or "nobody"
            raise LeaseLost(f"unit {unit_id}: the lease of {self.owner} expired; {holder} holds it now")

    # -- units ------------------------------------------------------------------------------

    def upsert_unit(self, policy: str, db: str, tbl: str, part: str, source: str) -> Unit:
        key = {"policy": policy, "source": source}
        with self.db.tx() as c:
            added = c.execute(
                "INSERT INTO units (policy, db, tbl, part, source, state, updated)"
                " VALUES (:policy, :db, :tbl, :part, :source, :state, :now)"
                " ON CONFLICT (policy, source) DO NOTHING",
                {**key, "db": db, "tbl": tbl, "part": part, "state": UnitState.QUALIFIED, "now": time.time()},
            ).rowcount
            row = c.execute("SELECT * FROM units WHERE policy = :policy AND source = :source", key).fetchone()
            assert row is not None
            if added:
                self.event(row["id"], "discovered", f"{db}.{tbl} {part}".strip(), c)
        return Unit.of(row)

    def unit(self, unit_id: int) -> Unit:
        return Unit.of(self.db.query("SELECT * FROM units WHERE id = :id", {"id": unit_id})[0])

    def units(self, policy: str | None = None) -> list[Unit]:
        if policy is None:
            rows = self.db.query("SELECT * FROM units ORDER BY id")
        else:
            rows = self.db.query("SELECT * FROM units WHERE policy = :p ORDER BY id", {"p": policy})
        return [Unit.of(r) for r in rows]

    def set_state(self, unit_id: int, state: UnitState, event: str = "", **columns: Any) -> Unit:
        """Move a unit to ``state`` (and set the given columns) in one transaction."""
        state = UnitState(state)
        unknown = set(columns) - _SETTABLE
        if unknown:
            raise ValueError(f"not a column a state change sets: {sorted(unknown)}")
        if "resume_state" in columns and columns["resume_state"] is None:
            columns["resume_state"] = ""
        sets = "".join(f", {k} = :{k}" for k in columns)
        with self.db.tx() as c:
            self._hold(c, unit_id)
            c.execute(
                f"UPDATE units SET state = :state, updated = :now{sets} WHERE id = :id",
                {"state": state, "now": time.time(), **columns, "id": unit_id},
            )
            self.event(unit_id, event or state, "", c)
        return self.unit(unit_id)

    def start_attempt(
        self, unit_id: int, dest_for: Callable[[Unit, int], str], files: list[tuple[str, int, int]]
    ) -> Unit:
        """A new attempt: its destination prefix and the source files it must copy, recorded
        before any byte moves."""
        with self.db.tx() as c:
            self._hold(c, unit_id)
            row = c.execute("SELECT * FROM units WHERE id = :id", {"id": unit_id}).fetchone()
            assert row is not None
            u = Unit.of(row)
            attempt = u.attempt + 1
            dest = str(dest_for(u, attempt))
            c.execute(
                "INSERT INTO attempts (unit_id, attempt, dest, started) VALUES (:id, :attempt, :dest, :now)",
                {"id": unit_id, "attempt": attempt, "dest": dest, "now": time.time()},
            )
            c.executemany(
                "INSERT INTO files (unit_id, attempt, rel, length, mtime_ms)"
                " VALUES (:id, :attempt, :rel, :length, :mtime)",
                [
                    {"id": unit_id, "attempt": attempt, "rel": rel, "length": length, "mtime": mtime}
                    for rel, length, mtime in files
                ],
            )
            c.execute(
                "UPDATE units SET state = :state, attempt = :attempt, dest = :dest, files = :files,"
                " bytes = :bytes, copied_bytes = 0, updated = :now WHERE id = :id",
                {
                    "state": UnitState.COPYING,
                    "attempt": attempt,
                    "dest": dest,
                    "files": len(files),
                    "bytes": sum(f[1] for f in files),
                    "now": time.time(),
                    "id": unit_id,
                },
            )
            by = f" by {self.owner}" if self.owner else ""
            self.event(unit_id, "copying", f"attempt {attempt} → {dest}{by}", c)
        return self.unit(unit_id)

    def files(self, unit_id: int, attempt: int) -> list[UnitFile]:
        rows = self.db.query(
            "SELECT * FROM files WHERE unit_id = :id AND attempt = :attempt ORDER BY rel",
            {"id": unit_id, "attempt": attempt},
        )
        return [
            UnitFile(r["rel"], r["length"], r["mtime_ms"], r["sha256"], FileState(r["state"]), r["copies"])
            for r in rows
        ]

    def file_done(
        self, unit_id: int, attempt: int, rel: str, state: FileState, sha256: str, length: int
    ) -> None:
        key = {"id": unit_id, "attempt": attempt, "rel": rel}
        copied = int(state == FileState.COPIED)
        with self.db.tx() as c:
            self._hold(c, unit_id)
            c.execute(
                "UPDATE files SET state = :state, sha256 = :sha, copies = copies + :copied"
                " WHERE unit_id = :id AND attempt = :attempt AND rel = :rel",
                {**key, "state": FileState(state), "sha": sha256, "copied": copied},
            )
            if copied:
                c.execute(
                    "UPDATE units SET copied_bytes = copied_bytes + :n, updated = :now WHERE id = :id",
                    {"n": length, "now": time.time(), "id": unit_id},
                )

    def copy_again(self, unit_id: int, attempt: int, rel: str, length: int, why: str) -> None:
        """The copy of a file is not the source's bytes (``why``): it goes back to planned, its
        bytes no longer count as copied, and the next try copies it again."""
        with self.db.tx() as c:
            self._hold(c, unit_id)
            n = c.execute(
                "UPDATE files SET state = :planned, sha256 = '' WHERE unit_id = :id AND attempt = :attempt"
                " AND rel = :rel AND state = :copied",
                {
                    "planned": FileState.PLANNED,
                    "copied": FileState.COPIED,
                    "id": unit_id,
                    "attempt": attempt,
                    "rel": rel,
                },
            ).rowcount
            if n:
                c.execute(
                    "UPDATE units SET copied_bytes = copied_bytes - :n, updated = :now WHERE id = :id",
                    {"n": length, "now": time.time(), "id": unit_id},
                )
                self.event(unit_id, "copy-again", f"{rel}: {why}", c)

    def flip(self, unit_id: int, source: str, target: str) -> Unit:
        """The flip: the proxy serves ``target`` for ``source`` from the moment this commits."""
        with self.db.tx() as c:
            self._hold(c, unit_id)
            u = c.execute("SELECT state FROM units WHERE id = :id", {"id": unit_id}).fetchone()
            assert u is not None
            if u["state"] != UnitState.VERIFIED:
                raise RuntimeError(f"unit {unit_id} is {u['state']}, not verified: not flipping")
            now = time.time()
            c.execute(
                "INSERT INTO flips (source, target, unit_id, flipped_at) VALUES (:source, :target, :id, :now)"
                " ON CONFLICT (source) DO UPDATE SET target = excluded.target, unit_id = excluded.unit_id,"
                " flipped_at = excluded.flipped_at",
                {"source": source, "target": target, "id": unit_id, "now": now},
            )
            c.execute(
                "UPDATE units SET state = :state, flipped_at = :now, updated = :now WHERE id = :id",
                {"state": UnitState.FLIPPED, "now": now, "id": unit_id},
            )
            self.event(unit_id, "flipped", f"{source} → {target}", c)
        return self.unit(unit_id)

    def mark_written_back(self, unit_id: int, location: str) -> Unit:
        with self.db.tx() as c:
            self._hold(c, unit_id)
            c.execute(
                "UPDATE units SET written_back = 1, updated = :now WHERE id = :id",
                {"now": time.time(), "id": unit_id},
            )
            self.event(unit_id, "written-back", location, c)
        return self.unit(unit_id)

    def note(self, unit_id: int, message: str) -> None:
        """Record why a unit waits (shown by ``policy status``), once per distinct message."""
        with self.db.tx() as c:
            self._hold(c, unit_id)
            row = c.execute("SELECT last_error FROM units WHERE id = :id", {"id": unit_id}).fetchone()
            assert row is not None
            if row["last_error"] != message:
                c.execute(
                    "UPDATE units SET last_error = :msg, updated = :now WHERE id = :id",
                    {"msg": message, "now": time.time(), "id": unit_id},
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
            "UPDATE attempts SET cleaned = 1 WHERE unit_id = :id AND attempt = :attempt",
            {"id": unit_id, "attempt": attempt},
        )

    def leased_dests(self, besides: str = "") -> set[str]:
        """The destination prefixes of units another loop than ``besides`` holds a live lease on."""
        rows = self.db.query(
            "SELECT dest FROM units WHERE dest <> '' AND owner <> '' AND owner <> :me AND lease_until >= :now",
            {"me": besides, "now": time.time()},
        )
        return {r["dest"] for r in rows}

    def events(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.db.query("SELECT * FROM events ORDER BY id DESC LIMIT :n", {"n": limit})


def load_flips(db: StateDB) -> dict[str, str]:
    """``source → target`` for every flipped unit: what the proxy serves instead."""
    return {r["source"]: r["target"] for r in db.query("SELECT source, target FROM flips")}
