"""The state DB: one schema with a recorded version, upgraded in place, refused when newer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from metaproxy.state import StateError, open_state, schema
from metaproxy.state.units import FileState, MigrationStore, UnitState

pytestmark = pytest.mark.unit

TABLES = {"mounts", "policies", "units", "files", "attempts", "events", "flips", "cache_rules", "reads"}


def test_a_new_file_has_every_table_at_the_current_version(tmp_path: Path) -> None:
    with open_state(tmp_path / "state.db") as db:
        names = {r["name"] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names >= TABLES
        assert db.version == schema.VERSION
    with open_state(tmp_path / "state.db") as again:  # opening twice changes nothing
        assert again.version == schema.VERSION


def test_a_file_from_before_versions_is_upgraded_in_place(tmp_path: Path) -> None:
    """A state file written by metaproxy 0.1: the resume state was the part of last_error
    before a '|'; it becomes a column of its own, and nothing else of the unit changes."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(schema.V1)
    conn.execute(
        "INSERT INTO units (policy, db, tbl, part, source, state, attempt, dest, last_error, failures, updated)"
        " VALUES ('p', 'd', 't', 'x=1', 'hdfs://nn/w/t/x=1', 'failed', 2, 's3://b/t/a2', "
        "'copying|RuntimeError: S3 said no', 3, 0)"
    )
    conn.execute(
        "INSERT INTO units (policy, db, tbl, part, source, state, last_error, updated)"
        " VALUES ('p', 'd', 't', 'x=2', 'hdfs://nn/w/t/x=2', 'skipped', 'olderThan: a file was modified 3s ago', 0)"
    )
    conn.commit()
    conn.close()
    with open_state(path) as db:
        assert db.version == schema.VERSION
        failed, skipped = MigrationStore(db).units("p")
    assert failed.state == UnitState.FAILED and failed.resume_state == UnitState.COPYING
    assert failed.last_error == "RuntimeError: S3 said no"
    assert (failed.attempt, failed.failures, failed.dest) == (2, 3, "s3://b/t/a2")
    assert skipped.resume_state is None and skipped.last_error == "olderThan: a file was modified 3s ago"


def test_a_file_from_a_newer_metaproxy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with open_state(path) as db:
        db.execute("UPDATE schema_version SET version = ?", [schema.VERSION + 1])
    with pytest.raises(StateError, match="newer metaproxy"):
        open_state(path)


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    with open_state(tmp_path / "state.db") as db:
        with pytest.raises(RuntimeError), db.tx() as c:
            c.execute("INSERT INTO flips (source, target, unit_id, flipped_at) VALUES ('a', 'b', 1, 0)")
            raise RuntimeError("crash between two statements")
        assert db.query("SELECT * FROM flips") == []


def test_unit_states_and_the_resume_state_round_trip(tmp_path: Path) -> None:
    with open_state(tmp_path / "state.db") as db:
        store = MigrationStore(db)
        u = store.upsert_unit("p", "d", "t", "", "hdfs://nn/w/t")
        assert u.state == UnitState.QUALIFIED and u.name == "d.t"
        u = store.set_state(u.id, UnitState.FAILED, last_error="boom", resume_state=UnitState.VERIFIED)
        assert (u.state, u.resume_state, u.last_error) == (UnitState.FAILED, UnitState.VERIFIED, "boom")
        u = store.set_state(u.id, UnitState.VERIFIED, "retry", resume_state=None)
        assert u.resume_state is None and u.last_error == "boom"
        with pytest.raises(ValueError, match="not a column"):
            store.set_state(u.id, UnitState.FLIPPED, source="elsewhere")
        with pytest.raises(ValueError):
            store.set_state(u.id, "no-such-state")  # type: ignore[arg-type]


def test_a_bad_copy_is_planned_again_and_its_bytes_uncounted(tmp_path: Path) -> None:
    with open_state(tmp_path / "state.db") as db:
        store = MigrationStore(db)
        u = store.upsert_unit("p", "d", "t", "", "hdfs://nn/w/t")
        u = store.start_attempt(u.id, lambda unit, n: f"s3://b/t/a{n}", [("f0", 10, 1), ("f1", 7, 1)])
        store.file_done(u.id, u.attempt, "f0", FileState.COPIED, "aa", 10)
        store.file_done(u.id, u.attempt, "f1", FileState.COPIED, "bb", 7)
        store.copy_again(u.id, u.attempt, "f0", 10, "the copy read back differs from the source")
        store.copy_again(u.id, u.attempt, "f0", 10, "again")  # once planned, nothing more to take back
        states = {f.rel: (f.state, f.sha256) for f in store.files(u.id, u.attempt)}
        assert states == {"f0": (FileState.PLANNED, ""), "f1": (FileState.COPIED, "bb")}
        assert store.unit(u.id).copied_bytes == 7
        assert [e["kind"] for e in store.events(10)].count("copy-again") == 1
