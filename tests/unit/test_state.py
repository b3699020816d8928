"""The state DB on both backends (a SQLite file, a PostgreSQL database): one schema with a
recorded version, upgraded in place, refused when newer; transactions; the journal; leases."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from metaproxy.state import StateError, open_state, schema
from metaproxy.state.units import FileState, LeaseLost, MigrationStore, UnitState

pytestmark = [pytest.mark.unit, pytest.mark.state]

TABLES = {"mounts", "policies", "units", "files", "attempts", "events", "flips", "cache_rules", "reads"}


def columns(db: object) -> dict[str, set[str]]:
    inspector = sa.inspect(db.engine)  # type: ignore[attr-defined]
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def test_a_new_state_has_every_table_at_the_current_version(state_where: str) -> None:
    with open_state(state_where) as db:
        assert set(columns(db)) >= TABLES
        assert db.version == schema.VERSION
    with open_state(state_where) as again:  # opening twice changes nothing
        assert again.version == schema.VERSION


def test_a_new_file_and_an_upgraded_one_have_the_same_columns(tmp_path: Path) -> None:
    """The declared tables (a new state) and the steps (an old file brought up) agree."""
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript(schema.V1)
    conn.close()
    with open_state(old) as upgraded, open_state(tmp_path / "new.db") as new:
        assert columns(upgraded) == columns(new)


def test_two_processes_opening_a_new_postgres_database_at_once_create_it_once(postgres_server: int) -> None:
    from conftest import fresh_postgres_database

    where = fresh_postgres_database(postgres_server)
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            open_state(where).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_state(where) as db:
        assert db.version == schema.VERSION
        assert db.query("SELECT count(*) AS n FROM schema_version") == [{"n": 1}]


def test_a_password_never_shows_in_a_message(postgres_server: int) -> None:
    with pytest.raises(StateError) as e:
        open_state(f"postgresql://metaproxy:s3cret@127.0.0.1:{postgres_server}/no_such_database")
    assert "s3cret" not in str(e.value) and "no_such_database" in str(e.value)


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


def test_a_state_from_a_newer_metaproxy_is_refused(state_where: str) -> None:
    with open_state(state_where) as db:
        db.execute("UPDATE schema_version SET version = :v", {"v": schema.VERSION + 1})
    with pytest.raises(StateError, match="newer metaproxy"):
        open_state(state_where)


def test_a_failed_transaction_leaves_nothing(state_where: str) -> None:
    with open_state(state_where) as db:
        with pytest.raises(RuntimeError), db.tx() as c:
            c.execute("INSERT INTO flips (source, target, unit_id, flipped_at) VALUES ('a', 'b', 1, 0)")
            raise RuntimeError("crash between two statements")
        assert db.query("SELECT * FROM flips") == []


def test_unit_states_and_the_resume_state_round_trip(state_where: str) -> None:
    with open_state(state_where) as db:
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


def test_a_bad_copy_is_planned_again_and_its_bytes_uncounted(state_where: str) -> None:
    with open_state(state_where) as db:
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


def test_a_lease_is_held_by_one_loop_until_it_expires_or_is_released(state_where: str) -> None:
    with open_state(state_where) as db:
        a, b = MigrationStore(db, "loop-a", lease_s=1.0), MigrationStore(db, "loop-b", lease_s=1.0)
        u = a.upsert_unit("p", "d", "t", "", "hdfs://nn/w/t")
        held = a.claim(u.id)
        assert held is not None and held.owner == "loop-a"
        assert b.claim(u.id) is None  # a holds it
        assert a.claim(u.id) is not None  # renewing one's own lease
        a.release(u.id)
        assert b.claim(u.id) is not None  # released: b takes it at once
        time.sleep(1.2)
        taken = a.claim(u.id)  # b's lease expired
        assert taken is not None and taken.owner == "loop-a"


def test_a_loop_that_lost_its_lease_changes_nothing(state_where: str) -> None:
    """A loop that stalled past its lease while another took the unit over cannot move it: every
    change it tries fails with LeaseLost and leaves the unit as the new owner has it."""
    with open_state(state_where) as db:
        a, b = MigrationStore(db, "loop-a", lease_s=0.5), MigrationStore(db, "loop-b", lease_s=60)
        u = a.upsert_unit("p", "d", "t", "", "hdfs://nn/w/t")
        assert a.claim(u.id) is not None
        u = a.start_attempt(u.id, lambda unit, n: f"s3://b/t/a{n}", [("f0", 10, 1)])
        time.sleep(0.7)
        assert b.claim(u.id) is not None
        with pytest.raises(LeaseLost, match="loop-b holds it"):
            a.file_done(u.id, u.attempt, "f0", FileState.COPIED, "aa", 10)
        with pytest.raises(LeaseLost):
            a.set_state(u.id, UnitState.VERIFIED)
        with pytest.raises(LeaseLost):
            a.flip(u.id, u.source, u.dest)
        assert a.renew([u.id]) == [u.id]
        after = b.unit(u.id)
        assert (after.state, after.copied_bytes, after.owner) == (UnitState.COPYING, 0, "loop-b")
        assert [f.copies for f in b.files(u.id, u.attempt)] == [0]
        assert db.query("SELECT * FROM flips") == []
        b.file_done(u.id, u.attempt, "f0", FileState.COPIED, "aa", 10)  # the holder goes on
        assert [f.copies for f in b.files(u.id, u.attempt)] == [1]


def test_loops_claiming_at_once_get_each_unit_once(state_where: str) -> None:
    """Eight loops race for twenty units: every unit is claimed by exactly one of them."""
    with open_state(state_where) as db:
        setup = MigrationStore(db)
        ids = [setup.upsert_unit("p", "d", "t", f"x={i}", f"hdfs://nn/w/t/x={i}").id for i in range(20)]
        won: dict[int, list[str]] = {i: [] for i in ids}
        lock = threading.Lock()

        def loop(name: str) -> None:
            store = MigrationStore(db, name, lease_s=60)
            for uid in ids:
                if store.claim(uid) is not None:
                    with lock:
                        won[uid].append(name)

        threads = [threading.Thread(target=loop, args=(f"loop-{n}",)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(owners) == 1 for owners in won.values()), won
        assert {u.owner for u in setup.units("p")} == {o for owners in won.values() for o in owners}


def test_a_whole_state_is_copied_into_an_empty_one(tmp_path: Path, state_where: str) -> None:
    """``metaproxy state copy``: every row of every table, ids kept; new ids come after them."""
    from metaproxy.state.cache import PIN, save_cache_rule
    from metaproxy.state.policies import insert_policy
    from metaproxy.state.transfer import copy_state

    with open_state(tmp_path / "from.db") as src, open_state(state_where) as dst:
        insert_policy(src, "p", "/tpcds", "ufsMigrate(olderThan(1m), UFS[s3]:STORE)")
        save_cache_rule(src, PIN, "tpcds/date_dim", 1.0)
        store = MigrationStore(src, "loop-a")
        for part in ("x=1", "x=2"):
            u = store.upsert_unit("p", "d", "t", part, f"hdfs://nn/w/t/{part}")
        assert store.claim(u.id) is not None
        u = store.start_attempt(u.id, lambda unit, n: f"s3://b/t/a{n}", [("f0", 10, 1)])
        store.file_done(u.id, u.attempt, "f0", FileState.VERIFIED, "aa", 10)
        store.set_state(u.id, UnitState.VERIFIED)
        store.flip(u.id, u.source, u.dest)
        copied = copy_state(src, dst)
        assert copied["units"] == 2 and copied["flips"] == 1 and copied["policies"] == 1
        for table in schema.metadata.sorted_tables:
            order = ", ".join(c.name for c in table.primary_key.columns)
            sql = f"SELECT * FROM {table.name} ORDER BY {order}"
            assert src.query(sql) == dst.query(sql), table.name
        again = MigrationStore(dst).upsert_unit("p", "d", "t", "x=3", "hdfs://nn/w/t/x=3")
        assert again.id == max(u.id for u in MigrationStore(src).units()) + 1
        with pytest.raises(StateError, match="already holds"):
            copy_state(src, dst)
