"""Migration policies, as rows (the grammar lives in :mod:`metaproxy.migrate.policy`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from metaproxy.state.db import StateDB


@dataclass(frozen=True)
class PolicyRow:
    name: str
    path: str
    expr: str
    created: float
    enabled: bool


class PolicyExists(ValueError):
    """A policy of that name is stored already."""


def insert_policy(db: StateDB, name: str, path: str, expr: str) -> None:
    try:
        db.execute(
            "INSERT INTO policies (name, path, expr, created, enabled) VALUES (:name, :path, :expr, :now, 1)",
            {"name": name, "path": path, "expr": expr, "now": time.time()},
        )
    except sa.exc.IntegrityError:
        raise PolicyExists(name) from None


def list_policies(db: StateDB) -> list[PolicyRow]:
    return [
        PolicyRow(r["name"], r["path"], r["expr"], float(r["created"]), bool(r["enabled"]))
        for r in db.query("SELECT * FROM policies ORDER BY name")
    ]


def delete_policy(db: StateDB, name: str) -> bool:
    """Delete a policy; False if there was none of that name."""
    return db.execute("DELETE FROM policies WHERE name = :name", {"name": name}) > 0
