"""Every table of metaproxy's state, and how an older state file is brought up to date.

The schema is a list of numbered steps. A state file records the last step applied
(``schema_version``); opening it applies the steps after that one, each in its own
transaction, so a file written by any earlier version of metaproxy is upgraded in place and
a file from a newer version is refused rather than misread.

Who writes what: the CLI (``mounts``, ``policies``), the migration loop (``units``, ``files``,
``attempts``, ``events``, ``flips``), the gateway (``cache_rules``, ``reads``). The proxy only
reads (``mounts``, ``flips``).
"""

from __future__ import annotations

#: version 1: the tables as metaproxy 0.1 created them (each ``IF NOT EXISTS``: files written
#: before versions were recorded already hold some of them)
V1 = """
CREATE TABLE IF NOT EXISTS mounts (
    path TEXT PRIMARY KEY,          -- the logical path, e.g. /tpcds
    ufs TEXT NOT NULL,              -- JSON list of member UFS prefixes, as the operator wrote them
    read_priority TEXT NOT NULL,    -- JSON list of member schemes in read order
    create_target TEXT NOT NULL,    -- the scheme new tables and partitions are created on
    created_at FLOAT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    name TEXT PRIMARY KEY,
    path TEXT NOT NULL,             -- the mount path the policy covers
    expr TEXT NOT NULL,             -- the policy in its canonical spelling
    created FLOAT NOT NULL,
    enabled INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    policy TEXT NOT NULL,
    db TEXT NOT NULL,
    tbl TEXT NOT NULL,
    part TEXT NOT NULL,            -- partition name, '' for an unpartitioned table
    source TEXT NOT NULL,          -- the unit's location on the source UFS (as the HMS has it)
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    dest TEXT NOT NULL DEFAULT '', -- this attempt's destination prefix
    files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    copied_bytes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    copy_seconds REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL,
    flipped_at REAL,
    written_back INTEGER NOT NULL DEFAULT 0, -- the on-prem HMS holds ``dest`` ([migrate] write_back_to_hms)
    removed_at REAL,
    UNIQUE (policy, source)
);
CREATE TABLE IF NOT EXISTS files (
    unit_id INTEGER NOT NULL REFERENCES units(id),
    attempt INTEGER NOT NULL,
    rel TEXT NOT NULL,
    length INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'planned',   -- planned | copied | verified
    PRIMARY KEY (unit_id, attempt, rel)
);
CREATE TABLE IF NOT EXISTS attempts (
    unit_id INTEGER NOT NULL REFERENCES units(id),
    attempt INTEGER NOT NULL,
    dest TEXT NOT NULL,
    started REAL NOT NULL,
    cleaned INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (unit_id, attempt)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    unit_id INTEGER,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS flips (
    source TEXT PRIMARY KEY,        -- a unit's location as the on-prem HMS stores it
    target TEXT NOT NULL,           -- its verified copy on S3
    unit_id INTEGER NOT NULL,
    flipped_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cache_rules (
    kind TEXT NOT NULL,             -- 'pin' (value: when) or 'ttl' (value: seconds)
    path TEXT NOT NULL,             -- a gateway key prefix, e.g. tpcds/date_dim
    value FLOAT NOT NULL,
    PRIMARY KEY (kind, path)
);
CREATE TABLE IF NOT EXISTS reads (
    key TEXT PRIMARY KEY,           -- a gateway key read through the gateway
    last_read REAL NOT NULL         -- wall clock (for unusedFor policies)
);
"""

#: version 2: the state a failed unit resumes from gets a column of its own (it was the part
#: of ``last_error`` before a ``|``)
V2 = """
ALTER TABLE units ADD COLUMN resume_state TEXT NOT NULL DEFAULT '';
UPDATE units SET resume_state = substr(last_error, 1, instr(last_error, '|') - 1),
                 last_error = substr(last_error, instr(last_error, '|') + 1)
 WHERE state = 'failed' AND instr(last_error, '|') > 0;
"""

#: the steps, in order; the version of a state file is the number of steps applied
STEPS: tuple[str, ...] = (V1, V2)
VERSION = len(STEPS)
