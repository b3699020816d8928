"""Every table of metaproxy's state, and how an older state database is brought up to date.

The tables are declared once, here, as SQLAlchemy Core tables: a new database — a SQLite file
or a PostgreSQL database — gets them from these declarations, in the types of its own dialect.
A database records the last schema step applied (``schema_version``); opening it applies the
steps after that one, so a state written by any earlier version of metaproxy is upgraded in
place and one from a newer version is refused rather than misread.

Steps 1 and 2 only ever ran on SQLite files (PostgreSQL came with step 3, so no PostgreSQL
database is older than that); from step 3 on a step is plain SQL both dialects run.

Who writes what: the CLI (``mounts``, ``policies``), the migration loop (``units``, ``files``,
``attempts``, ``events``, ``flips``), the gateway (``cache_rules``, ``reads``). The proxy only
reads (``mounts``, ``flips``).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: wall-clock times are seconds since the epoch, as floating point (PostgreSQL: double precision)
_Time = sa.Float

mounts = sa.Table(
    "mounts",
    metadata,
    sa.Column("path", sa.Text, primary_key=True),  # the logical path, e.g. /tpcds
    sa.Column("ufs", sa.Text, nullable=False),  # JSON list of member UFS prefixes
    sa.Column("read_priority", sa.Text, nullable=False),  # JSON list of member schemes
    sa.Column("create_target", sa.Text, nullable=False),  # where new tables and partitions go
    sa.Column("created_at", _Time, nullable=False),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("path", sa.Text, nullable=False),  # the mount path the policy covers
    sa.Column("expr", sa.Text, nullable=False),  # the policy in its canonical spelling
    sa.Column("created", _Time, nullable=False),
    sa.Column("enabled", sa.Integer, nullable=False),
)

units = sa.Table(
    "units",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.Text, nullable=False),
    sa.Column("db", sa.Text, nullable=False),
    sa.Column("tbl", sa.Text, nullable=False),
    sa.Column("part", sa.Text, nullable=False),  # partition name, '' for an unpartitioned table
    sa.Column("source", sa.Text, nullable=False),  # the unit's location as the HMS has it
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("dest", sa.Text, nullable=False, server_default=""),  # this attempt's prefix
    sa.Column("files", sa.Integer, nullable=False, server_default="0"),
    sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("copied_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_try", _Time, nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text, nullable=False, server_default=""),
    sa.Column("copy_seconds", _Time, nullable=False, server_default="0"),
    sa.Column("updated", _Time, nullable=False),
    sa.Column("flipped_at", _Time),
    # the on-prem HMS holds ``dest`` ([migrate] write_back_to_hms)
    sa.Column("written_back", sa.Integer, nullable=False, server_default="0"),
    sa.Column("removed_at", _Time),
    sa.Column("resume_state", sa.Text, nullable=False, server_default=""),  # step 2
    # step 3: the migration loop that drives the unit now, and until when its lease holds
    sa.Column("owner", sa.Text, nullable=False, server_default=""),
    sa.Column("lease_until", _Time, nullable=False, server_default="0"),
    sa.UniqueConstraint("policy", "source"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("unit_id", sa.Integer, sa.ForeignKey("units.id"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("rel", sa.Text, primary_key=True),
    sa.Column("length", sa.BigInteger, nullable=False),
    sa.Column("mtime_ms", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False, server_default=""),
    sa.Column("state", sa.Text, nullable=False, server_default="planned"),  # planned|copied|verified
    # step 3: how many times the file was copied (more than once: a copy redone, or two loops)
    sa.Column("copies", sa.Integer, nullable=False, server_default="0"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("unit_id", sa.Integer, sa.ForeignKey("units.id"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("dest", sa.Text, nullable=False),
    sa.Column("started", _Time, nullable=False),
    sa.Column("cleaned", sa.Integer, nullable=False, server_default="0"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", _Time, nullable=False),
    sa.Column("unit_id", sa.Integer),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
)

flips = sa.Table(
    "flips",
    metadata,
    sa.Column("source", sa.Text, primary_key=True),  # a unit's location as the on-prem HMS has it
    sa.Column("target", sa.Text, nullable=False),  # its verified copy on S3
    sa.Column("unit_id", sa.Integer, nullable=False),
    sa.Column("flipped_at", _Time, nullable=False),
)

cache_rules = sa.Table(
    "cache_rules",
    metadata,
    sa.Column("kind", sa.Text, primary_key=True),  # 'pin', 'pin_until' (when) or 'ttl' (seconds)
    sa.Column("path", sa.Text, primary_key=True),  # a gateway key prefix, e.g. tpcds/date_dim
    sa.Column("value", sa.Float, nullable=False),
)

reads = sa.Table(
    "reads",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # a gateway key read through the gateway
    sa.Column("last_read", _Time, nullable=False),  # wall clock (for unusedFor policies)
)

#: step 1: the tables as metaproxy 0.1 created them in SQLite (each ``IF NOT EXISTS``: files
#: written before versions were recorded already hold some of them)
V1 = """
CREATE TABLE IF NOT EXISTS mounts (
    path TEXT PRIMARY KEY, ufs TEXT NOT NULL, read_priority TEXT NOT NULL,
    create_target TEXT NOT NULL, created_at FLOAT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY, path TEXT NOT NULL, expr TEXT NOT NULL, created FLOAT NOT NULL,
    enabled INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL, db TEXT NOT NULL, tbl TEXT NOT NULL, part TEXT NOT NULL,
    source TEXT NOT NULL, state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, dest TEXT NOT NULL DEFAULT '',
    files INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    copied_bytes INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
    copy_seconds REAL NOT NULL DEFAULT 0, updated REAL NOT NULL, flipped_at REAL,
    written_back INTEGER NOT NULL DEFAULT 0, removed_at REAL,
    UNIQUE (policy, source)
);
CREATE TABLE IF NOT EXISTS files (
    unit_id INTEGER NOT NULL REFERENCES units(id), attempt INTEGER NOT NULL, rel TEXT NOT NULL,
    length INTEGER NOT NULL, mtime_ms INTEGER NOT NULL, sha256 TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'planned',
    PRIMARY KEY (unit_id, attempt, rel)
);
CREATE TABLE IF NOT EXISTS attempts (
    unit_id INTEGER NOT NULL REFERENCES units(id), attempt INTEGER NOT NULL, dest TEXT NOT NULL,
    started REAL NOT NULL, cleaned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, attempt)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, unit_id INTEGER, kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS flips (
    source TEXT PRIMARY KEY, target TEXT NOT NULL, unit_id INTEGER NOT NULL, flipped_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache_rules (
    kind TEXT NOT NULL, path TEXT NOT NULL, value FLOAT NOT NULL, PRIMARY KEY (kind, path)
);
CREATE TABLE IF NOT EXISTS reads (
    key TEXT PRIMARY KEY, last_read REAL NOT NULL
);
"""

#: step 2 (SQLite): the state a failed unit resumes from gets a column of its own (it was the
#: part of ``last_error`` before a ``|``)
V2 = """
ALTER TABLE units ADD COLUMN resume_state TEXT NOT NULL DEFAULT '';
UPDATE units SET resume_state = substr(last_error, 1, instr(last_error, '|') - 1),
                 last_error = substr(last_error, instr(last_error, '|') + 1)
 WHERE state = 'failed' AND instr(last_error, '|') > 0;
"""

#: step 3: leases, so several migration loops share one policy's units, and a count of copies
V3 = """
ALTER TABLE units ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE units ADD COLUMN lease_until FLOAT NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN copies INTEGER NOT NULL DEFAULT 0;
"""

#: the steps, in order; the version of a state database is the number of steps applied
STEPS: tuple[str, ...] = (V1, V2, V3)
VERSION = len(STEPS)
#: the first step a PostgreSQL database can need (it is never older than this)
FIRST_PORTABLE_STEP = 3


def statements(step: str) -> list[str]:
    """The statements of a step (they hold no ``;`` of their own)."""
    return [s.strip() for s in step.split(";") if s.strip()]
