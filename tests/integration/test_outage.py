"""Degrade, don't die: with the on-prem side frozen (its processes stopped with SIGSTOP, their
ports still open, as a hung machine or a dead link looks), what metaproxy has cached keeps
being served, the rest fails at once with a clear error, health says so, and all recovers by
itself when the on-prem side thaws."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config as BotoConfig
from hive_metastore import ttypes as tt
from prometheus_client import REGISTRY
from proxying import proxy_config, uri

from metaproxy.cache.server import GatewayServer
from metaproxy.config import parse_config
from metaproxy.hms import connect
from metaproxy.thrift_server import MetastoreProxy
from metaproxy.ufs.webhdfs import WebHdfs

pytestmark = pytest.mark.integration


@contextmanager
def frozen(stack: dict[str, Any], *components: str) -> Iterator[None]:
    """The stack's processes of ``components`` stopped (SIGSTOP) for the block, then resumed."""
    pids = [int(stack["pids"][c]) for c in components]
    for pid in pids:
        os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGCONT)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_proxy_serves_what_it_holds_while_the_metastore_is_frozen(
    stack: dict[str, Any], tpcds: Any, tmp_path: Any
) -> None:
    cfg = proxy_config(stack, str(tmp_path), call_timeout="30s")
    raw_proxy = {"events_interval": "200ms", "probe_timeout": "500ms", "stale_if_error": "5m"}
    cfg = parse_config(
        {
            "metastore": {"uris": list(cfg.metastore.uris), "call_timeout": "30s"},
            "state": {"path": f"{tmp_path}/state.db"},
            "proxy": {
                "mount_refresh": "200ms",
                **raw_proxy,
                "listener": [{"port": 0, "profile": "cloud"}, {"port": 0, "profile": "passthrough"}],
            },
            "mount": [{"path": "/tpcds", "ufs": f"{stack['hdfs']}/warehouse/tpcds"}],
        },
        "test.toml",
    )
    p = MetastoreProxy(cfg)
    p.start()
    req = tt.GetTableRequest(dbName="tpcds", tblName="store_sales")
    try:
        with connect(uri(p, "cloud")) as c:  # warm: the answers are kept
            table = c.get_table_req(req).table
            names = c.get_partition_names("tpcds", "store_sales", -1)
            parts = c.get_partitions_by_names("tpcds", "store_sales", names[:5])
        with frozen(stack, "hms"):
            wait_for(lambda: not p.health()["ok"], "the proxy to see the metastore frozen")
            assert "timeout" in p.health()["upstream"]["reason"]
            with connect(uri(p, "cloud"), timeout_s=10) as c:
                assert c.get_table_req(req).table == table  # stale, from the cache
                assert c.get_partition_names("tpcds", "store_sales", -1) == names
                assert c.get_partitions_by_names("tpcds", "store_sales", names[:5]) == parts
                with pytest.raises(tt.MetaException, match="not answering"):  # never cached: told at once
                    c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="item"))
            # one listener's answers are its own: the passthrough listener never had this one
            with (
                connect(uri(p, "passthrough"), timeout_s=10) as c,
                pytest.raises(tt.MetaException, match="not answering"),
            ):
                c.get_table_req(req)
            # health, the metrics and the report say which upstream is down, since when, how stale
            mc = p.health()["metadata_cache"]
            assert mc["stale_served"] >= 3 and mc["last_stale_age_s"] > 0
            assert REGISTRY.get_sample_value("metaproxy_proxy_stale_answer_age_seconds") > 0
            text, doc = report(p, tmp_path)
            assert "NOT ANSWERING since" in text and "timeout" in text, text
            assert "served stale, the last" in text, text
            assert doc["proxy"]["upstream"]["answering"] is False
            assert doc["proxy"]["upstream"]["down_since"] <= time.time()
            assert doc["proxy"]["metadata_cache"]["stale_served"] >= 3
        wait_for(lambda: p.health()["ok"], "the proxy to see the metastore again")
        with connect(uri(p, "cloud")) as c:
            assert (
                c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="item")).table.tableName == "item"
            )
    finally:
        p.stop()


def test_a_call_waiting_when_the_metastore_freezes_fails_when_the_freeze_is_seen(
    stack: dict[str, Any], tpcds: Any, tmp_path: Any
) -> None:
    """A call already sent upstream when the HMS stops answering is not left to wait for
    ``call_timeout`` (10 minutes here, far beyond the client's own 30 s): once the proxy's watch
    finds the HMS not answering, the call is ended and the client told why."""
    cfg = parse_config(
        {
            "metastore": {"uris": [stack["hms"]], "call_timeout": "10m"},
            "state": {"path": f"{tmp_path}/state.db"},
            "proxy": {
                "events_interval": "200ms",
                "probe_timeout": "500ms",
                "listener": [{"port": 0, "profile": "cloud"}],
            },
            "mount": [{"path": "/tpcds", "ufs": f"{stack['hdfs']}/warehouse/tpcds"}],
        },
        "test.toml",
    )
    p = MetastoreProxy(cfg)
    p.start()
    try:
        with connect(uri(p, "cloud"), timeout_s=30) as c:
            c.get_all_databases()  # the connection is open and pooled
            with frozen(stack, "hms"):
                with pytest.raises(tt.MetaException, match="not answering|stopped answering"):
                    c.get_table_req(tt.GetTableRequest(dbName="tpcds", tblName="date_dim"))
                assert REGISTRY.get_sample_value("metaproxy_proxy_upstream_pool_total", {"event": "aborted"})
        wait_for(lambda: p.health()["ok"], "the proxy to see the metastore again")
    finally:
        p.stop()


def report(p: MetastoreProxy, tmp_path: Any) -> tuple[str, dict[str, Any]]:
    """``metaproxy report`` (text and --json) with the proxy's admin endpoint and a gateway's."""
    from click.testing import CliRunner

    from metaproxy.admin import AdminServer
    from metaproxy.cli import cli

    admin = AdminServer("127.0.0.1", 0, p.health)
    admin.start()
    gateway = {
        "port": 0,
        "admin_port": 0,
        "access_key": "k",
        "secret_key": "s",
        "events_interval": "0s",
        "disk": {"path": f"{tmp_path}/gw-cache", "capacity": "16MiB"},
    }
    state = {"path": f"{tmp_path}/gw-state.db"}
    gw = GatewayServer(parse_config({"state": state, "gateway": gateway}, "test.toml")).start()
    try:
        assert gw.admin is not None
        args = [
            "report",
            "--url",
            f"http://127.0.0.1:{gw.admin.port}",
            "--proxy-url",
            f"http://127.0.0.1:{admin.port}",
        ]
        text = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
        doc = CliRunner().invoke(cli, [*args, "--json"])
        assert text.exit_code == 0 and doc.exit_code == 0, text.output + doc.output
        return text.output, json.loads(doc.output)
    finally:
        gw.stop()
        admin.stop()


def test_the_gateway_serves_what_it_holds_while_hdfs_is_frozen(stack: dict[str, Any], tmp_path: Any) -> None:
    root = f"/tmp/outage-{uuid.uuid4().hex[:8]}"
    fs = WebHdfs(stack["webhdfs"])
    data = os.urandom(300_000)
    fs.write(f"{root}/d=1/cached.bin", data)
    fs.write(f"{root}/d=2/cold.bin", b"never read before the outage")
    cfg = parse_config(
        {
            "state": {"path": f"{tmp_path}/state.db"},
            "gateway": {
                "port": 0,
                "admin_port": 0,
                "bucket": "metaproxy",
                "access_key": "k",
                "secret_key": "s",
                "block_size": "64KiB",
                "stale_after": "1s",
                "probe_interval": "200ms",
                "probe_timeout": "500ms",
                "events_interval": "0s",
                "disk": {"path": f"{tmp_path}/cache", "capacity": "64MiB"},
            },
            "hdfs": {"webhdfs": stack["webhdfs"]},
            "mount": [{"path": "/data", "ufs": f"{stack['hdfs']}{root}"}],
        },
        "test.toml",
    )
    gw = GatewayServer(cfg).start()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{gw.port}",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, read_timeout=20),
    )
    admin = f"http://127.0.0.1:{gw.admin.port}" if gw.admin else ""

    def listed() -> list[str]:
        return sorted(
            o["Key"] for o in s3.list_objects_v2(Bucket="metaproxy", Prefix="data/d=1/")["Contents"]
        )

    try:
        assert s3.get_object(Bucket="metaproxy", Key="data/d=1/cached.bin")["Body"].read() == data
        assert listed() == ["data/d=1/cached.bin"]
        with frozen(stack, "namenode"):
            wait_for(
                lambda: requests.get(f"{admin}/health", timeout=5).json()["ufs_not_answering"], "the probe"
            )
            time.sleep(1.2)  # past stale_after: what is served now comes from the outage rules
            assert s3.get_object(Bucket="metaproxy", Key="data/d=1/cached.bin")["Body"].read() == data
            assert listed() == ["data/d=1/cached.bin"]
            with pytest.raises(botocore.exceptions.ClientError) as e:  # never read: told at once
                s3.get_object(Bucket="metaproxy", Key="data/d=2/cold.bin")
            assert e.value.response["Error"]["Code"] == "SlowDown"
            assert "has not answered" in e.value.response["Error"]["Message"]
            report = requests.get(f"{admin}/report", timeout=5).json()
            assert report["ufs_not_answering"]
            # what was served stale, and how old it was (taken before the freeze, > stale_after)
            assert report["stale_served"] >= 2 and report["last_stale_age_s"] >= 1.0
            assert REGISTRY.get_sample_value("metaproxy_gateway_stale_age_seconds") >= 1.0
        wait_for(
            lambda: not requests.get(f"{admin}/health", timeout=5).json()["ufs_not_answering"], "the thaw"
        )
        assert (
            s3.get_object(Bucket="metaproxy", Key="data/d=2/cold.bin")["Body"].read()
            == b"never read before the outage"
        )
    finally:
        gw.stop()
        fs.delete(root, recursive=True)
