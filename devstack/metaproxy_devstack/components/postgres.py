"""PostgreSQL for metaproxy's shared state (``stack up --state postgres``): the server binaries
Debian's ``postgresql`` package installs, a database cluster of the stack's own under
``data/postgres/``, listening on loopback only.

The cluster lets the stack's own user ``metaproxy`` in without a password (``trust`` on
loopback): it is a development stack. A production state database takes a password from
libpq's own sources (``~/.pgpass`` or ``PGPASSFILE``), never from metaproxy's config.

PostgreSQL refuses to run as root; when the stack runs as root, the server and ``initdb`` run
as the ``postgres`` system user the package creates.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from metaproxy_devstack.common import HOST, StackError

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

#: the role metaproxy connects as, and its database
USER = "metaproxy"
DATABASE = "metaproxy"
#: the system user the server runs as when the stack runs as root
SYSTEM_USER = "postgres"


def pg_bin() -> Path:
    """The folder of the newest PostgreSQL server installed (``postgres``, ``initdb``)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).parent
    raise StackError(
        "PostgreSQL is needed for the shared state (stack up --state postgres): install Debian's "
        "postgresql package (make setup-postgres does)"
    )


def _as_server_user(argv: list[str], *paths: Path) -> list[str]:
    """``argv`` run as the ``postgres`` system user when we are root (``paths`` given to it)."""
    if os.geteuid() != 0:
        return argv
    try:
        user = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise StackError(
            f"PostgreSQL does not run as root, and there is no {SYSTEM_USER!r} user to run it as "
            "(Debian's postgresql package creates it)"
        ) from None
    for p in paths:
        for sub in [p, *p.rglob("*")]:
            os.chown(sub, user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", "--", *argv]


def init_cluster(data: Path, run: Path, log: Path) -> None:
    """Create a database cluster in ``data`` (once), its socket folder ``run``."""
    run.mkdir(parents=True, exist_ok=True)
    if (data / "PG_VERSION").exists():
        _as_server_user(["true"], data, run)  # owned by the server's user, as it was
        return
    data.mkdir(parents=True, exist_ok=True)
    argv = [str(pg_bin() / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"]
    done = subprocess.run(_as_server_user(argv, data, run), capture_output=True, text=True)
    with open(log, "a") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise StackError(f"initdb failed: {(done.stderr or done.stdout).strip()[-800:]}")


def server_argv(data: Path, run: Path, port: int) -> list[str]:
    """The command that runs the server of the cluster in ``data`` on loopback ``port``."""
    argv = [
        str(pg_bin() / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(run),
        "-c",
        f"listen_addresses={HOST}",
        "-c",
        "max_connections=200",  # every proxy, gateway, loop and test holds a small pool
    ]
    return _as_server_user(argv, data, run)


def url(port: int, database: str = DATABASE) -> str:
    """The state URL of a database of the stack's server."""
    return f"postgresql://{USER}@{HOST}:{port}/{database}"


def create_database(port: int, name: str) -> bool:
    """Create database ``name`` unless it exists; False if the server does not answer yet."""
    import psycopg

    try:
        with psycopg.connect(url(port, "postgres"), connect_timeout=2, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
        return True
    except psycopg.OperationalError:
        return False


def drop_database(port: int, name: str) -> None:
    import psycopg

    with psycopg.connect(url(port, "postgres"), connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def prepare_postgres(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    data, run = st.data / "postgres", st.data / "postgres-run"
    st.logs.mkdir(parents=True, exist_ok=True)
    init_cluster(data, run, st.logs / "postgres-init.log")
    return server_argv(data, run, st.port("postgres")), {}


def postgres_ready(st: StackLayout) -> bool:
    """The server answers, and metaproxy's database exists."""
    return create_database(st.port("postgres"), DATABASE)
