"""The gateway's persistent cache rules (pins and TTLs) and its read log (for ``unusedFor``)."""

from __future__ import annotations

from collections.abc import Mapping

from metaproxy.state.db import StateDB

PIN = "pin"
TTL = "ttl"
#: a pin that ends: the value is when (wall clock)
PIN_UNTIL = "pin_until"


def cache_rules(db: StateDB) -> dict[str, dict[str, float]]:
    """Rules by kind: ``pin`` (gateway key prefix → pinned at, wall clock), ``ttl`` (→ seconds),
    ``pin_until`` (→ when the pin ends, wall clock)."""
    rules: dict[str, dict[str, float]] = {PIN: {}, TTL: {}, PIN_UNTIL: {}}
    for row in db.query("SELECT kind, path, value FROM cache_rules"):
        rules.setdefault(row["kind"], {})[row["path"]] = float(row["value"])
    return rules


def save_cache_rule(db: StateDB, kind: str, path: str, value: float | None) -> None:
    """Store a rule, or delete it when ``value`` is None."""
    if value is None:
        db.execute(
            "DELETE FROM cache_rules WHERE kind = :kind AND path = :path", {"kind": kind, "path": path}
        )
    else:
        db.execute(
            "INSERT INTO cache_rules (kind, path, value) VALUES (:kind, :path, :value)"
            " ON CONFLICT (kind, path) DO UPDATE SET value = excluded.value",
            {"kind": kind, "path": path, "value": value},
        )


def record_reads(db: StateDB, reads: Mapping[str, float]) -> None:
    """Note when each gateway key was last read (a later time wins)."""
    db.executemany(
        "INSERT INTO reads (key, last_read) VALUES (:key, :t)"
        " ON CONFLICT (key) DO UPDATE SET last_read = CASE WHEN excluded.last_read > reads.last_read"
        " THEN excluded.last_read ELSE reads.last_read END",
        [{"key": k, "t": t} for k, t in reads.items()],
    )


def last_read(db: StateDB, key: str) -> float | None:
    """When anything at or below gateway key ``key`` was last read (None: never recorded)."""
    rows = db.query(
        "SELECT max(last_read) AS t FROM reads WHERE key = :key OR substr(key, 1, :n) = :below",
        {"key": key, "n": len(key) + 1, "below": key + "/"},
    )
    return float(rows[0]["t"]) if rows and rows[0]["t"] is not None else None
