"""The flips the migration loop has committed, as the proxy reads them.

A flip maps a unit's source location (as the on-prem HMS stores it) to its verified copy on
S3. The proxy polls this (``[proxy] mount_refresh``) and rewrites flipped locations to their
S3 copies for every profile that rewrites, and back on the way in.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from metaproxy.state import connect


def load_flips(db_path: str | Path) -> dict[str, str]:
    """``source → target`` for every flipped unit (empty when the loop never ran)."""
    if not Path(db_path).exists():
        return {}
    conn = connect(db_path)
    try:
        return {s: t for s, t in conn.execute("SELECT source, target FROM flips")}
    except sqlite3.OperationalError as e:
        if "no such table" in str(e):
            return {}
        raise
    finally:
        conn.close()
