"""Mounts added at run time (``metaproxy mount add``), as rows."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from metaproxy.state.db import StateDB


@dataclass(frozen=True)
class MountRow:
    """A stored mount, as the operator gave it (validated by :func:`metaproxy.mounts.make_mount`)."""

    path: str
    ufs: tuple[str, ...]
    read_priority: tuple[str, ...]
    create_target: str


def _row(r: dict[str, object]) -> MountRow:
    return MountRow(
        str(r["path"]),
        tuple(json.loads(str(r["ufs"]))),
        tuple(json.loads(str(r["read_priority"]))),
        str(r["create_target"]),
    )


def stored_mounts(db: StateDB) -> list[MountRow]:
    return [_row(r) for r in db.query("SELECT * FROM mounts ORDER BY path")]


def insert_mount(db: StateDB, m: MountRow) -> None:
    db.execute(
        "INSERT INTO mounts (path, ufs, read_priority, create_target, created_at)"
        " VALUES (:path, :ufs, :read_priority, :create_target, :created_at)",
        {
            "path": m.path,
            "ufs": json.dumps(list(m.ufs)),
            "read_priority": json.dumps(list(m.read_priority)),
            "create_target": m.create_target,
            "created_at": time.time(),
        },
    )


def delete_mount(db: StateDB, path: str) -> MountRow | None:
    """Delete the mount at ``path``; the row it was, or None if there was none."""
    with db.tx() as c:
        found = c.execute("SELECT * FROM mounts WHERE path = :path", {"path": path}).fetchall()
        c.execute("DELETE FROM mounts WHERE path = :path", {"path": path})
    return _row(found[0]) if found else None
