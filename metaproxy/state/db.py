"""The state database, and the only code that connects to it: a SQLite file (the embedded
default) or a PostgreSQL database that several machines share.

Both are reached through SQLAlchemy Core; statements elsewhere in this package are plain SQL
with named parameters (``:name``) that both dialects run. What differs between the two is
decided here, once:

* **SQLite** is opened in WAL mode so readers (a proxy polling for mounts and flips) never
  block the writer (the migration loop), with ``synchronous=FULL`` so a committed step survives
  a crash or power loss. A transaction is ``BEGIN IMMEDIATE`` … ``COMMIT``: two writers never
  interleave a read-modify-write.
* **PostgreSQL** (``postgresql://…``, through psycopg 3) commits durably by default. A
  transaction first takes one transaction-scoped advisory lock, so writers take turns exactly as
  they do on SQLite, wherever they run; readers never wait for it.

The migration loop writes the intent of every step before it acts on it and relies on both.
Opening a database brings its schema up to date (:mod:`metaproxy.state.schema`).

One :class:`StateDB` is shared by the threads of a process: each statement or transaction takes
a pooled connection of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, CursorResult

from metaproxy.state import schema

BUSY_TIMEOUT_MS = 10_000
#: seconds to wait for a PostgreSQL connection before the state counts as unreachable
CONNECT_TIMEOUT_S = 5
#: the advisory lock every PostgreSQL transaction of metaproxy takes (any fixed 64-bit number:
#: "metaprox" in ASCII)
WRITE_LOCK = 0x6D65746170726F78
URL_SCHEMES = ("postgresql://", "postgresql+psycopg://", "sqlite:///")

#: a statement's parameters: by name
Params = Mapping[str, Any]


class StateError(RuntimeError):
    """The state cannot be used (unreachable, written by a newer metaproxy, or broken)."""


class Rows:
    """The outcome of one statement: its rows as dicts, and how many rows it changed."""

    def __init__(self, result: CursorResult[Any]) -> None:
        self.rowcount = result.rowcount
        self._rows = [dict(r) for r in result.mappings()] if result.returns_rows else []

    def fetchone(self) -> dict[str, Any] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[dict[str, Any]]:
        return self._rows


class Tx:
    """Statements inside one transaction (see :meth:`StateDB.tx`)."""

    def __init__(self, conn: Connection) -> None:
        self.connection = conn

    def execute(self, sql: str, params: Params | None = None) -> Rows:
        return Rows(self.connection.execute(sa.text(sql), dict(params or {})))

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        if rows:
            self.connection.execute(sa.text(sql), [dict(r) for r in rows])


def state_url(where: str | Path) -> sa.URL:
    """The SQLAlchemy URL of a state given as a file path or as a ``postgresql://`` URL."""
    text = str(where)
    if text.startswith(URL_SCHEMES):
        url = sa.make_url(text)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3, not the default psycopg2
        return url
    return sa.URL.create("sqlite", database=str(Path(text)))


def shown(url: sa.URL) -> str:
    """A URL as messages show it: never with its password."""
    if url.get_backend_name() == "sqlite":
        return str(url.database)
    return url.render_as_string(hide_password=True)


class StateDB:
    """A connection pool to the state database, with its schema current."""

    def __init__(self, where: str | Path, lazy: bool = False) -> None:
        self.url = state_url(where)
        self.where = shown(self.url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self.path: Path | None = Path(str(self.url.database))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(
                self.url,
                connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                pool_size=8,
            )
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        elif self.dialect == "postgresql":
            self.path = None
            self.engine = sa.create_engine(
                self.url,
                connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "metaproxy"},
                pool_size=8,
                pool_pre_ping=True,  # a database restarted meanwhile: reconnect, don't fail
            )
        else:
            raise StateError(f"{self.where}: not a state database metaproxy knows (SQLite or PostgreSQL)")
        #: the schema is current (checked once, on the first statement when ``lazy``)
        self._current = False
        self._upgrade_lock = threading.Lock()
        self._local = threading.local()  # .upgrading: this thread is bringing the schema up
        if not lazy:
            try:
                self._ensure()
            except BaseException:
                self.engine.dispose()
                raise

    def _ensure(self) -> None:
        """Bring the schema up to date once; StateError while the database cannot be reached."""
        if self._current:
            return
        with self._upgrade_lock:
            if self._current:
                return
            self._local.upgrading = True
            try:
                self._upgrade()
            except sa.exc.OperationalError as e:
                raise StateError(f"{self.where}: cannot open the state: {_reason(e)}") from e
            finally:
                self._local.upgrading = False
            self._current = True

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    # -- schema -----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """The number of schema steps applied to this database."""
        rows = self.query("SELECT version FROM schema_version")
        return int(rows[0]["version"]) if rows else 0

    def _upgrade(self) -> None:
        """Create the tables of a new database, or apply the steps an older one lacks — in one
        transaction, so two processes opening the same new database at once do it once."""
        with self.tx() as c:
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = c.execute("SELECT version FROM schema_version").fetchone()
            have = int(row["version"]) if row else 0
            if row is None:
                c.execute("INSERT INTO schema_version (version) VALUES (0)")
            if have > schema.VERSION:
                raise StateError(
                    f"{self.where}: the state was written by a newer metaproxy (schema {have}, "
                    f"this one knows up to {schema.VERSION}); upgrade metaproxy"
                )
            if have == schema.VERSION:
                return
            conn = c.connection
            if have == 0 and not sa.inspect(conn).has_table("units"):
                schema.metadata.create_all(conn)  # a new database: the current tables at once
                c.execute("UPDATE schema_version SET version = :v", {"v": schema.VERSION})
                return
            if self.dialect != "sqlite" and have < schema.FIRST_PORTABLE_STEP - 1:
                raise StateError(f"{self.where}: a {self.dialect} state at schema {have} cannot exist")
            for number in range(have + 1, schema.VERSION + 1):
                try:
                    for statement in schema.statements(schema.STEPS[number - 1]):
                        conn.exec_driver_sql(statement)
                except sa.exc.DBAPIError as e:
                    raise StateError(
                        f"{self.where}: upgrading the state to schema {number} failed: {_reason(e)}"
                    ) from e
                c.execute("UPDATE schema_version SET version = :v", {"v": number})

    def ids_follow_rows(self, tx: Tx) -> None:
        """After rows were inserted with their ids (a copied state): the next id each table
        hands out comes after them (PostgreSQL keeps a sequence per table; SQLite needs
        nothing)."""
        if self.dialect != "postgresql":
            return
        for table in schema.metadata.sorted_tables:
            if table.autoincrement_column is None:
                continue
            col = table.autoincrement_column.name
            tx.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{col}'),"
                f" coalesce(max({col}), 1), max({col}) IS NOT NULL) FROM {table.name}"
            )

    # -- statements ---------------------------------------------------------------------------

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        """One transaction, writers taking turns (committed at the end, rolled back on an
        exception)."""
        if not getattr(self._local, "upgrading", False):
            self._ensure()
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn = conn.execution_options(immediate=True)
            with conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": WRITE_LOCK})
                yield Tx(conn)

    def query(self, sql: str, params: Params | None = None) -> list[dict[str, Any]]:
        """The rows of one statement, each a dict of column → value."""
        if not getattr(self._local, "upgrading", False):
            self._ensure()
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), dict(params or {})).mappings()]

    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement in a transaction of its own; the number of rows it changed."""
        with self.tx() as c:
            return c.execute(sql, params).rowcount

    def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        with self.tx() as c:
            c.executemany(sql, rows)


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # transactions are ours (``_sqlite_begin``), never the sqlite3 module's implicit ones
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # a reader's transaction takes no lock; a writer's takes the write lock at once
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("immediate") else "BEGIN")


def _reason(e: sa.exc.DBAPIError) -> str:
    """The database's own message, without SQLAlchemy's statement dump (which may hold values)."""
    return str(e.orig).strip() if e.orig is not None else str(e)


def open_state(where: str | Path, lazy: bool = False) -> StateDB:
    """Open (creating it if needed) the state at ``where``: a SQLite file path or a
    ``postgresql://`` URL. ``lazy``: connect on the first statement, not now (a service that
    must start while the database is down, and connects once it answers)."""
    return StateDB(where, lazy)
