"""Copying a whole state into another: from a SQLite file to a PostgreSQL database when a
deployment grows past one machine (``metaproxy state copy``), or back."""

from __future__ import annotations

from metaproxy.state import schema
from metaproxy.state.db import StateDB, StateError


def copy_state(source: StateDB, target: StateDB) -> dict[str, int]:
    """Copy every row of every table of ``source`` into ``target``, which must hold none, in one
    transaction of the target's; the rows copied per table. Stop the migration loops first: the
    source is read table by table."""
    tables = schema.metadata.sorted_tables  # parents before the tables that refer to them
    with target.tx() as t:
        for table in tables:
            row = t.execute(f"SELECT count(*) AS n FROM {table.name}").fetchone()
            if row and row["n"]:
                raise StateError(
                    f"{target.where}: {table.name} already holds {row['n']} rows; copy into an empty state"
                )
        copied = {}
        for table in tables:
            rows = source.query(f"SELECT * FROM {table.name}")
            if rows:
                t.connection.execute(table.insert(), rows)
            copied[table.name] = len(rows)
        target.ids_follow_rows(t)
    return copied
