"""Shared fixtures: the real local stack, the sample data set, and clients for each component.

The stack is started once per session (or reused when ``metaproxy stack up`` already runs it),
with the Hive Metastore version ``$METAPROXY_HMS`` names (2.3, 3.1 or 4.0; default 4.0): a running
stack of another version is replaced. Tests marked ``compat`` must pass on every version
(``make test`` runs them on each); the others may assume 4.0.
With ``CI=true`` a component that cannot start fails the run; elsewhere the integration tests
are skipped with the reason, so unit tests still run on a machine without Java.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: the Hive Metastore version of the test stack
HMS_VERSION = os.environ.get("METAPROXY_HMS") or "4.0"
#: the secure stack (Kerberos, TLS): ``METAPROXY_SECURE=1 pytest -m secure``
SECURE = os.environ.get("METAPROXY_SECURE", "").lower() in ("1", "true", "yes")
#: where the stack's metaproxy keeps its state: ``METAPROXY_STATE=postgres pytest -m state``
#: runs the state, proxy and migration suites on PostgreSQL
STATE = os.environ.get("METAPROXY_STATE") or "sqlite"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Tests that need the secure stack belong to the secure run (``make test`` runs it last);
    integration tests not marked ``secure`` stay out of it. Each run deselects the others'."""

    def belongs(item: Any) -> bool:
        if SECURE:
            return not item.get_closest_marker("integration") or bool(item.get_closest_marker("secure"))
        return not item.get_closest_marker("secure_only")

    kept = [item for item in items if belongs(item)]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if not belongs(item)])
        items[:] = kept


@pytest.fixture(scope="session")
def stack() -> Iterator[dict[str, Any]]:
    """The running stack's endpoints (see metaproxy_devstack)."""
    from metaproxy_devstack.launcher import Stack, StackError

    st = Stack(hms_version=HMS_VERSION, secure=SECURE, state=STATE)
    reused = st.is_running()
    try:
        endpoints = st.up()
    except StackError as e:
        if IN_CI:
            pytest.fail(f"the local stack did not start: {e}", pytrace=False)
        pytest.skip(f"the local stack did not start: {e}")
    if SECURE:  # the admin endpoints and the gateway serve TLS from the stack's CA
        os.environ["REQUESTS_CA_BUNDLE"] = endpoints["secure"]["ca_file"]
    yield endpoints
    if not reused and not os.environ.get("METAPROXY_KEEP_STACK"):
        st.down(quiet=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[int]:
    """A PostgreSQL server's port: the stack's in a run on PostgreSQL (``METAPROXY_STATE``), else
    a server of the tests' own (Debian's postgresql package), stopped at the end."""
    import shutil
    import tempfile
    import time
    from pathlib import Path

    from metaproxy_devstack.common import StackError, load_endpoints
    from metaproxy_devstack.components import postgres as pg
    from metaproxy_devstack.procs import free_port, spawn, stop_group

    ep = load_endpoints() or {}
    if STATE == "postgres" and ep.get("postgres"):
        yield int(str(ep["postgres"]).rsplit(":", 1)[1].split("/")[0])
        return
    try:
        pg.pg_bin()
    except StackError as e:
        if IN_CI:
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    # under /tmp itself: the server's own user must reach it (pytest's folders are private)
    home = Path(tempfile.mkdtemp(prefix="metaproxy-pg-"))
    home.chmod(0o755)
    port = free_port()
    pg.init_cluster(home / "data", home / "run", home / "init.log")
    pid = spawn(pg.server_argv(home / "data", home / "run", port), {}, home / "server.log", home)
    deadline = time.monotonic() + 60
    while not pg.create_database(port, pg.DATABASE):
        if time.monotonic() > deadline:
            stop_group(pid)
            pytest.fail(f"PostgreSQL did not start; see {home / 'server.log'}", pytrace=False)
        time.sleep(0.3)
    yield port
    stop_group(pid)
    shutil.rmtree(home, ignore_errors=True)


def fresh_postgres_database(port: int) -> str:
    """The state URL of a new, empty database on the server at ``port``."""
    import uuid

    from metaproxy_devstack.components import postgres as pg

    name = f"t_{uuid.uuid4().hex[:12]}"
    if not pg.create_database(port, name):
        raise RuntimeError(f"PostgreSQL on port {port} does not answer")
    return pg.url(port, name)


@pytest.fixture(params=["sqlite", "postgres"])
def state_where(request: Any, tmp_path: Any) -> str:
    """An empty state on each backend: a SQLite file path, or a new PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    return fresh_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture(scope="session")
def tpcds(stack: dict[str, Any]) -> dict[str, Any]:
    """The default sample data set, loaded once (kept if an identical one is already loaded)."""
    from metaproxy_devstack import sample_data

    wanted = sample_data.sample_id(1.0, sample_data.DEFAULT_SEED, sample_data.DEFAULT_PARTITIONS)
    if sample_data.loaded_sample(stack["hms"]) != wanted:
        sample_data.load(stack["hms"], stack["hdfs"], stack["webhdfs"])
    return {"database": sample_data.DATABASE, "location": f"{stack['hdfs']}/warehouse/{sample_data.DATABASE}"}


@pytest.fixture(scope="session")
def sample() -> Any:
    """The default sample, generated in memory (the same rows the tpcds fixture loads)."""
    from metaproxy_devstack import sample_data

    return sample_data.generate()


@pytest.fixture(scope="session")
def trino_query(stack: dict[str, Any]) -> Callable[..., list[list[Any]]]:
    """Run one SQL statement in Trino and return all rows."""
    import trino

    host, port = stack["trino"].split("//", 1)[1].split(":")

    def run(sql: str, catalog: str = "direct", schema: str = "tpcds") -> list[list[Any]]:
        conn = trino.dbapi.connect(
            host=host, port=int(port), user="metaproxy", catalog=catalog, schema=schema, request_timeout=300
        )
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return [list(r) for r in cur.fetchall()]
        finally:
            conn.close()

    return run


@pytest.fixture(scope="session")
def s3_client(stack: dict[str, Any]) -> Any:
    """A boto3 S3 client for the local S3 server."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=stack["s3"],
        aws_access_key_id=stack["s3_access_key"],
        aws_secret_access_key=stack["s3_secret_key"],
        region_name=stack["s3_region"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """An S3 server of the test session's own (moto, in this process), for the tests that need
    a store without S3's guarantees: moto keeps no checksum of an object and checks none that
    a request carries. Its endpoint; it takes any keys."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def hms_client(stack: dict[str, Any]) -> Iterator[Any]:
    """A Hive Metastore client talking straight to the on-prem HMS."""
    from metaproxy.hms import connect

    with connect(stack["hms"]) as client:
        yield client


@pytest.fixture
def proxy(stack: dict[str, Any], tmp_path: Any, request: Any) -> Iterator[Any]:
    """An in-process metastore proxy (listeners cloud, onprem, passthrough) on the stack's HMS;
    ``request.param`` may add ``[metastore]`` keys, and ``[proxy]`` keys under ``"proxy"``."""
    from proxying import proxy_config

    from metaproxy.thrift_server import MetastoreProxy

    metastore = dict(getattr(request, "param", {}))
    p = MetastoreProxy(proxy_config(stack, str(tmp_path), metastore.pop("proxy", None), **metastore))
    p.start()
    yield p
    p.stop()
