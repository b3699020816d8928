"""Past one machine: two metastore proxies and two migration loops, each its own process, on one
PostgreSQL state.

A policy moves a table of 32 partitions from HDFS to S3 (copy, verify, flip, write back, remove
after the grace period) while Trino queries the table through each proxy (the catalogs
``onprem_a`` and ``onprem_b``). One loop is killed with SIGKILL halfway, before one of its
copies; the other takes its unit over and finishes every unit. Every answer must be right, no
query may fail (so every proxy served each flip before its source went), and every file must
have been copied exactly once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import requests
from conftest import fresh_postgres_database
from test_migrate import SCHEMA, _toml, create_partitioned_table, rows, wait_for

from metaproxy.hms import connect
from metaproxy.migrate.policy import add_policy
from metaproxy.state import open_state
from metaproxy.state.units import MigrationStore
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path
from metaproxy_devstack.procs import free_port
from metaproxy_devstack.sample_data import parquet_bytes

pytestmark = pytest.mark.integration  # on PostgreSQL always: no run of its own per backend

PARTITIONS = 32
POLICY = "ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)"
#: the victim loop kills itself (SIGKILL) just before its eighth file copy: about halfway
CRASH_AT = "copy:8"


def port_of(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1])


@pytest.fixture
def lake(
    stack: dict[str, Any], postgres_server: int, s3_client: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """A 32-partition table under the /tpcds mount, every file two hours old, a policy over it
    in a new PostgreSQL state, and the configs of two proxies and of the loops on that state."""
    tag = uuid.uuid4().hex[:8]
    db = f"shared_{tag}"
    location = f"{stack['hdfs']}/warehouse/tpcds/{db}"
    fs = WebHdfs(stack["webhdfs"])
    old_ms = int((time.time() - 7200) * 1000)
    for d in range(PARTITIONS):
        ids = list(range(d * 100, d * 100 + 10 + d))
        table = pa.table({"id": ids, "v": [f"row-{i}" for i in ids]}, schema=SCHEMA)
        path = hdfs_path(f"{location}/t/d={d}/part-0.parquet")
        fs.write(path, parquet_bytes(table))
        fs.set_times(path, mtime_ms=old_ms)
    create_partitioned_table(stack["hms"], db, location, range(PARTITIONS))
    bucket = f"shared-{tag}"
    s3_client.create_bucket(Bucket=bucket)
    url = fresh_postgres_database(postgres_server)
    with open_state(url) as state:
        add_policy(state, f"p-{tag}", f"/tpcds/{db}/t", POLICY)
    raw = tomllib.loads(Path(stack["config"]).read_text())
    raw["state"] = {"url": url}
    raw["migrate"] = {
        "target": f"s3://{bucket}/",
        "interval": "1s",
        "lease": "3s",
        "grace_period": "3s",
        "write_back_to_hms": True,
    }
    configs = {}
    for name in ("a", "b"):
        proxy = dict(raw["proxy"])
        proxy.update(
            admin_port=free_port(),
            mount_refresh="1s",
            audit_log=str(tmp_path / f"audit-{name}.log"),
            listener=[{"port": port_of(stack[f"proxy_{name}"]), "profile": "cloud"}],
        )
        configs[name] = tmp_path / f"metaproxy-{name}.toml"
        configs[name].write_text(_toml({**raw, "proxy": proxy}))
    yield {"db": db, "bucket": bucket, "policy": f"p-{tag}", "url": url, "configs": configs, "raw": raw}
    with connect(stack["hms"]) as c:
        c.drop_database(db, False, True)
    fs.delete(hdfs_path(location), recursive=True)


def start(config: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "metaproxy", "--config", str(config), *args],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_two_proxies_and_two_loops_share_one_postgres_state(
    stack: dict[str, Any], lake: dict[str, Any], trino_query: Any, tmp_path: Path
) -> None:
    db, bucket = lake["db"], lake["bucket"]
    expected = rows(trino_query, "direct", db)
    assert len(expected) == PARTITIONS
    procs: list[subprocess.Popen[bytes]] = []
    answers: dict[str, list[Any]] = {"a": [], "b": []}
    halt = threading.Event()

    def query(name: str) -> None:
        while not halt.is_set():
            try:
                answers[name].append(rows(trino_query, f"onprem_{name}", db))
            except Exception as e:  # recorded, and fails the test below
                answers[name].append(e)

    queries = [threading.Thread(target=query, args=(n,)) for n in ("a", "b")]
    try:
        for name, config in lake["configs"].items():
            procs.append(start(config, tmp_path / f"proxy-{name}.log", "serve"))
        for name in ("a", "b"):
            admin = tomllib.loads(lake["configs"][name].read_text())["proxy"]["admin_port"]
            wait_for(lambda admin=admin: _healthy(admin), f"proxy {name}", 60)
        for t in queries:
            t.start()
        wait_for(lambda: all(len(a) >= 2 for a in answers.values()), "queries before the move", 120)
        config = lake["configs"]["a"]
        victim = start(
            config, tmp_path / "loop-victim.log", "migrate", "run", env={"METAPROXY_CRASH_AT": CRASH_AT}
        )
        survivor = start(config, tmp_path / "loop-survivor.log", "migrate", "run")
        procs += [victim, survivor]

        with open_state(lake["url"]) as state:
            store = MigrationStore(state)

            def states() -> dict[str, int]:
                out: dict[str, int] = {}
                for u in store.units(lake["policy"]):
                    out[u.state.value] = out.get(u.state.value, 0) + 1
                return out

            wait_for(lambda: victim.poll() is not None, "the victim loop to be killed", 180)
            assert victim.returncode == -signal.SIGKILL, (tmp_path / "loop-victim.log").read_text()[-2000:]
            wait_for(lambda: states() == {"removed": PARTITIONS}, "every unit to be removed", 300)
            n = {k: len(v) for k, v in answers.items()}
            wait_for(
                lambda: all(len(answers[k]) >= n[k] + 2 for k in answers), "queries after the removal", 120
            )
            units = store.units(lake["policy"])
            files = {u.part: store.files(u.id, u.attempt) for u in units}
            copying = [e for e in store.events(100_000) if e["kind"] == "copying"]
        served = {
            name: trino_query('SELECT DISTINCT "$path" FROM t', catalog=f"onprem_{name}", schema=db)
            for name in ("a", "b")
        }
    finally:
        halt.set()
        for t in queries:
            if t.is_alive():
                t.join(120)
        for p in procs:
            stop(p)

    for name, got in answers.items():
        failures = [a for a in got if isinstance(a, Exception)]
        assert not failures, (name, failures[:3])
        assert all(a == expected for a in got), (name, [a for a in got if a != expected][:2])
        assert len(got) >= 4, name
    # each unit copied exactly once: one attempt, every file copied once
    assert all(u.attempt == 1 for u in units), [(u.part, u.attempt) for u in units]
    assert all(len(fs) == 1 and fs[0].copies == 1 for fs in files.values()), files
    assert len(copying) == PARTITIONS
    # both loops did a share, and the survivor finished the unit the victim held when it died
    owners = {e["detail"].rsplit(" by ", 1)[1] for e in copying}
    assert len(owners) == 2, owners
    # every proxy serves the migrated locations
    for name, paths in served.items():
        assert len(paths) == PARTITIONS and all(p.startswith(f"s3://{bucket}/") for (p,) in paths), (
            name,
            paths,
        )


def _healthy(admin_port: int) -> bool:
    try:
        r = requests.get(f"http://127.0.0.1:{admin_port}/health", timeout=2)
        return r.status_code == 200 and r.json()["state"]["reachable"] is True
    except (requests.RequestException, ValueError, KeyError):
        return False


def test_a_proxy_keeps_its_flips_while_postgres_is_down_and_says_so(
    stack: dict[str, Any], tpcds: Any, tmp_path: Path
) -> None:
    """PostgreSQL of its own, stopped under a running proxy: the proxy goes on serving the flip
    it read, its health and metric say the state is unreachable, and once the server is back
    it reads the state again by itself."""
    from hive_metastore import ttypes as tt
    from proxying import proxy_config, uri

    from metaproxy.proxy.metrics import STATE_UP
    from metaproxy.thrift_server import MetastoreProxy
    from metaproxy_devstack.components import postgres as pg
    from metaproxy_devstack.procs import spawn, stop_group

    home = Path(tempfile.mkdtemp(prefix="metaproxy-pg-"))
    home.chmod(0o755)
    port = free_port()
    pg.init_cluster(home / "data", home / "run", home / "init.log")

    def start_server() -> int:
        pid = spawn(pg.server_argv(home / "data", home / "run", port), {}, home / "server.log", home)
        wait_for(lambda: pg.create_database(port, pg.DATABASE), "PostgreSQL", 60)
        return pid

    pid = start_server()
    source, target = f"{stack['hdfs']}/warehouse/tpcds/item", "s3://elsewhere/tpcds/item"
    with open_state(pg.url(port)) as db:
        db.execute(
            "INSERT INTO flips (source, target, unit_id, flipped_at) VALUES (:s, :t, 0, 0)",
            {"s": source, "t": target},
        )
    proxy = MetastoreProxy(
        proxy_config(stack, str(tmp_path), {"mount_refresh": "200ms"}, state={"url": pg.url(port)})
    )
    proxy.start()
    req = tt.GetTableRequest(dbName="tpcds", tblName="item")
    try:
        with connect(uri(proxy, "cloud")) as c:
            wait_for(lambda: c.get_table_req(req).table.sd.location == target, "the flip to be served")
            assert proxy.health()["state"]["reachable"] is True
            stop_group(pid)
            wait_for(lambda: not proxy.health()["state"]["reachable"], "the proxy to notice", 30)
            assert "could not reload" in proxy.health()["state"]["problem"]
            assert STATE_UP._value.get() == 0
            time.sleep(1)  # several refreshes while the state is down
            assert c.get_table_req(req).table.sd.location == target
            pid = start_server()
            wait_for(lambda: proxy.health()["state"]["reachable"] is True, "the proxy to reconnect", 30)
            assert STATE_UP._value.get() == 1
            assert c.get_table_req(req).table.sd.location == target
    finally:
        proxy.stop()
        stop_group(pid)
        shutil.rmtree(home, ignore_errors=True)
