"""Pre-fetch: a ``cacheLoad`` policy, added with the CLI like any policy, makes the gateway load
the files a new on-prem partition brings as soon as the notification log reports it — before
any reader — and pin them for the policy's ``pinFor``; files older than ``newerThan`` stay
where they are."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from hive_metastore import ttypes as tt
from test_gateway import BS, client, payload
from test_gateway_manage import cached, wait_for

from metaproxy.cache.server import GatewayServer
from metaproxy.cli import cli
from metaproxy.config import load_config
from metaproxy.hms import connect
from metaproxy.ufs.webhdfs import WebHdfs

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@pytest.fixture
def lake(stack: dict[str, Any]) -> Iterator[dict[str, str]]:
    """An external partitioned table on HDFS, under its own directory."""
    db = f"prefetch_{uuid.uuid4().hex[:8]}"
    root = f"/tmp/{db}"
    location = f"{stack['hdfs']}{root}/t"
    sd = tt.StorageDescriptor(
        cols=[tt.FieldSchema(name="v", type="string")],
        location=location,
        inputFormat="org.apache.hadoop.mapred.TextInputFormat",
        outputFormat="org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        serdeInfo=tt.SerDeInfo(serializationLib="org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe"),
    )
    with connect(stack["hms"]) as c:
        c.create_database(tt.Database(name=db, locationUri=f"{stack['hdfs']}{root}"))
        c.create_table(
            tt.Table(
                tableName="t",
                dbName=db,
                sd=sd,
                partitionKeys=[tt.FieldSchema(name="d", type="string")],
                parameters={"EXTERNAL": "TRUE"},
                tableType="EXTERNAL_TABLE",
            )
        )
    yield {"db": db, "root": root, "location": location}
    with connect(stack["hms"]) as c:
        c.drop_database(db, False, True)
    WebHdfs(stack["webhdfs"]).delete(root, recursive=True)


def config_file(stack: dict[str, Any], tmp_path: Path, root: str) -> Path:
    path = tmp_path / "metaproxy.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path}/state.db"

[metastore]
uris = ["{stack["hms"]}"]

[gateway]
port = 0
admin_port = 0
bucket = "metaproxy"
access_key = "gw-key"
secret_key = "gw-secret"
block_size = {BS}
stale_after = "10m"
events_interval = "200ms"

[gateway.disk]
path = "{tmp_path}/cache"
capacity = "64MiB"

[hdfs]
webhdfs = "{stack["webhdfs"]}"

[[mount]]
path = "/data"
ufs = "{stack["hdfs"]}{root}"
"""
    )
    return path


def add_partition(stack: dict[str, Any], lake: dict[str, str], d: str) -> None:
    with connect(stack["hms"]) as c:
        t = c.get_table_req(tt.GetTableRequest(dbName=lake["db"], tblName="t")).table
        sd = t.sd
        sd.location = f"{lake['location']}/d={d}"
        c.add_partitions([tt.Partition(values=[d], dbName=lake["db"], tableName="t", sd=sd)])


def test_new_partitions_under_a_cache_load_policy_are_loaded_and_pinned(
    stack: dict[str, Any], tmp_path: Path, lake: dict[str, str]
) -> None:
    cfg = config_file(stack, tmp_path, lake["root"])
    added = CliRunner().invoke(
        cli, ["--config", str(cfg), "policy", "add", "/data/t", "cacheLoad(newerThan(7d), pinFor(1h))"]
    )
    assert added.exit_code == 0, added.output
    bad = CliRunner().invoke(cli, ["--config", str(cfg), "policy", "add", "/data/t", "cacheLoad(pinFor(1h))"])
    assert bad.exit_code != 0 and "bad policy" in bad.output
    fs = WebHdfs(stack["webhdfs"])
    part = f"{lake['root']}/t/d=1"
    old, new = payload(2 * BS + 7), payload(3 * BS + 1)
    fs.write(f"{part}/a_old.bin", old)
    fs.write(f"{part}/b_new.bin", new)
    # a file last modified 30 days ago: outside newerThan(7d)
    r = requests.put(
        f"{stack['webhdfs']}/webhdfs/v1{part}/a_old.bin",
        params={
            "op": "SETTIMES",
            "modificationtime": int(time.time() * 1000) - 30 * DAY_MS,
            "user.name": "hdfs",
        },
        timeout=10,
    )
    r.raise_for_status()
    gw = GatewayServer(load_config(cfg)).start()
    try:
        assert gw.events is not None
        log_ = gw.events
        wait_for(lambda: bool(log_.status()["up"]), "the notification log", timeout=30)
        add_partition(stack, lake, "1")
        # loaded by the event, before any reader: the new file whole, the old one not at all
        wait_for(lambda: cached(gw, "/data/t/d=1/b_new.bin") == len(new), "the pre-fetch", timeout=20)
        assert cached(gw, "/data/t/d=1/a_old.bin") == 0
        pins = gw.gateway.manager.rules()["pins"]
        assert any(p.startswith("data/t") for p in pins), pins
        # the first read is served from the cache: nothing more read from HDFS
        before = gw.gateway.report()["bytes_read_per_ufs"]
        got = client(gw.port).get_object(Bucket="metaproxy", Key="data/t/d=1/b_new.bin")["Body"].read()
        assert got == new
        assert gw.gateway.report()["bytes_read_per_ufs"] == before
    finally:
        gw.stop()
