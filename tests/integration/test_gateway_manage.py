"""Managing the gateway's cache over real HDFS: load, pin, unpin, free, TTL, read-ahead,
metrics, and writes into a writable mount's create target (S3)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import pytest
import requests
from click.testing import CliRunner
from test_gateway import BS, client, gateway_config, payload

from metaproxy.cache.server import GatewayServer
from metaproxy.cli import cli
from metaproxy.config import parse_config
from metaproxy.ufs.webhdfs import WebHdfs

pytestmark = pytest.mark.integration


@pytest.fixture
def hdfs_dir(stack: dict[str, Any]) -> Iterator[str]:
    root = f"/tmp/gwm-{uuid.uuid4().hex[:8]}"
    yield root
    WebHdfs(stack["webhdfs"]).delete(root, recursive=True)


def run_cache(stack: dict[str, Any], gw: GatewayServer | str, *args: str, ok: bool = True) -> str:
    """``metaproxy cache …`` against a gateway (or its admin URL); asserts success or failure."""
    url = gw if isinstance(gw, str) else f"http://127.0.0.1:{gw.admin.port}"
    r = CliRunner().invoke(cli, ["--config", stack["config"], "cache", "--url", url, *args])
    assert (r.exit_code == 0) == ok, r.output
    return r.output


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def cached(gw: GatewayServer, target: str) -> int:
    return sum(f["cached"] for f in gw.gateway.manager.plan(target)["files"])


def test_load_free_and_the_report(stack: dict[str, Any], tmp_path: Any, hdfs_dir: str) -> None:
    fs = WebHdfs(stack["webhdfs"])
    fs.write(f"{hdfs_dir}/a/1.bin", payload(3 * BS))
    fs.write(f"{hdfs_dir}/a/2.bin", payload(2 * BS + 5))
    fs.write(f"{hdfs_dir}/b/3.bin", payload(BS))
    gw = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir)).start()
    try:
        out = run_cache(stack, gw, "load", "/data/a")
        assert "loaded 2 files" in out and "already cached" in out
        stats = gw.gateway.cache.stats
        assert stats.bytes_from_ufs == 5 * BS + 5
        assert cached(gw, "/data/a") == 5 * BS + 5 and cached(gw, "/data/b") == 0
        # a query after the load is served from the cache alone
        s3 = client(gw.port)
        assert s3.get_object(Bucket="metaproxy", Key="data/a/2.bin")["Body"].read() == payload(2 * BS + 5)
        assert stats.bytes_from_ufs == 5 * BS + 5
        # loading again fetches nothing; a UFS URI names the same files as the mount path
        out = run_cache(stack, gw, "load", f"{stack['hdfs']}{hdfs_dir}/a")
        assert "0 B fetched" in out
        out = run_cache(stack, gw, "free", "/data/a/1.bin")
        assert f"freed {3 * BS / 1024:,.1f} KiB" in out
        assert cached(gw, "/data/a") == 2 * BS + 5
        s3.get_object(Bucket="metaproxy", Key="data/a/1.bin")["Body"].read()
        assert stats.bytes_from_ufs == 8 * BS + 5  # refetched after the free
        # bad targets get a clear error
        assert "under no mount" in run_cache(stack, gw, "load", "/elsewhere/x", ok=False)
        assert "under no mount" in run_cache(stack, gw, "free", "hdfs://other:8020/x", ok=False)
        assert "under no mount" in run_cache(stack, gw, "load", "/data/../etc", ok=False)
        # report and metrics carry the per-tier figures
        rep = requests.get(f"http://127.0.0.1:{gw.admin.port}/report", timeout=5).json()
        assert rep["tiers"]["disk_used"] > 0 and rep["bytes_read_per_ufs"]["hdfs"] == 8 * BS + 5
        metrics = requests.get(f"http://127.0.0.1:{gw.admin.port}/metrics", timeout=5).text
        assert 'metaproxy_cache_used_bytes{tier="disk"}' in metrics
        assert f'metaproxy_cache_ufs_read_bytes_total{{ufs="hdfs"}} {float(8 * BS + 5)}' in metrics
    finally:
        gw.stop()


def test_pins_survive_churn_and_restarts_and_are_capped(
    stack: dict[str, Any], tmp_path: Any, hdfs_dir: str
) -> None:
    fs = WebHdfs(stack["webhdfs"])
    fs.write(f"{hdfs_dir}/hot/h.bin", payload(4 * BS))
    fs.write(f"{hdfs_dir}/big/b.bin", payload(16 * BS))
    for i in range(3):
        fs.write(f"{hdfs_dir}/cold/c{i}.bin", payload(8 * BS, seed=i))
    cfg = gateway_config(
        stack,
        str(tmp_path),
        hdfs_dir,
        memory={"capacity": 2 * BS},
        disk={"path": f"{tmp_path}/cache", "capacity": 10 * (BS + 16)},
        pinned_max=6 * BS,
    )
    gw = GatewayServer(cfg).start()
    try:
        out = run_cache(stack, gw, "pin", "/data/hot")
        assert "pinned /data/hot (1 files)" in out
        assert cached(gw, "/data/hot") == 4 * BS
        rep = CliRunner().invoke(
            cli, ["report", "--url", f"http://127.0.0.1:{gw.admin.port}"], terminal_width=200
        )
        assert rep.exit_code == 0 and "pinned path" in rep.output and "/data/hot" in rep.output, rep.output
        assert "0.2 MiB in 1 file versions" in rep.output
        s3 = client(gw.port)
        for i in range(3):  # 24 blocks through a 10-block disk tier
            s3.get_object(Bucket="metaproxy", Key=f"data/cold/c{i}.bin")["Body"].read()
        assert gw.gateway.cache.stats.evictions_disk > 0
        assert cached(gw, "/data/hot") == 4 * BS
        # the cap: a pin that would pass pinned_max is refused and says why
        assert "pinned_max" in run_cache(stack, gw, "pin", "/data/big", ok=False)
        assert "free" not in gw.gateway.manager.rules()["pins"]
        # free keeps pinned files
        assert "1 pinned files kept" in run_cache(stack, gw, "free", "/data/hot")
    finally:
        gw.stop()
    gw = GatewayServer(cfg).start()  # pins are in the state DB and hold after a restart
    try:
        assert gw.gateway.manager.rules()["pins"] == ["data/hot"]
        wait_for(lambda: gw.gateway.cache.pinned_bytes == 4 * BS, "the pins to be restored")
        s3 = client(gw.port)
        for i in range(3):
            s3.get_object(Bucket="metaproxy", Key=f"data/cold/c{i}.bin")["Body"].read()
        assert cached(gw, "/data/hot") == 4 * BS
        assert "unpinned 1 files" in run_cache(stack, gw, "unpin", "/data/hot")
        for i in range(3):
            s3.get_object(Bucket="metaproxy", Key=f"data/cold/c{i}.bin")["Body"].read()
        assert cached(gw, "/data/hot") < 4 * BS  # evictable again
        assert gw.gateway.manager.rules()["pins"] == []
    finally:
        gw.stop()


def test_ttl_frees_blocks_after_it_runs_out(stack: dict[str, Any], tmp_path: Any, hdfs_dir: str) -> None:
    fs = WebHdfs(stack["webhdfs"])
    fs.write(f"{hdfs_dir}/tmp/t.bin", payload(2 * BS))
    fs.write(f"{hdfs_dir}/keep/k.bin", payload(2 * BS))
    gw = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir, ttl_check_interval="200ms")).start()
    try:
        assert "TTL 1s" in run_cache(stack, gw, "ttl", "/data/tmp", "1s")
        assert "expected a duration" in run_cache(stack, gw, "ttl", "/data/tmp", "soon", ok=False)
        s3 = client(gw.port)
        s3.get_object(Bucket="metaproxy", Key="data/tmp/t.bin")["Body"].read()
        s3.get_object(Bucket="metaproxy", Key="data/keep/k.bin")["Body"].read()
        assert cached(gw, "/data/tmp") == 2 * BS
        wait_for(lambda: cached(gw, "/data/tmp") == 0, "the TTL to free /data/tmp")
        assert cached(gw, "/data/keep") == 2 * BS
        assert "ttl  /data/tmp  1s" in run_cache(stack, gw, "rules")
        assert "no TTL" in run_cache(stack, gw, "ttl", "/data/tmp", "--clear")
        assert gw.gateway.manager.rules()["ttls"] == {}
    finally:
        gw.stop()


def test_sequential_readers_get_read_ahead(stack: dict[str, Any], tmp_path: Any, hdfs_dir: str) -> None:
    from metaproxy.cache.blocks import BlockKey

    WebHdfs(stack["webhdfs"]).write(f"{hdfs_dir}/seq.bin", payload(8 * BS))
    gw = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir, read_ahead_blocks=2)).start()
    try:
        s3 = client(gw.port)
        r = gw.gateway.resolve("data/seq.bin")
        for i in range(2):  # two ranged reads, one after the other
            body = s3.get_object(
                Bucket="metaproxy", Key="data/seq.bin", Range=f"bytes={i * BS}-{(i + 1) * BS - 1}"
            )
            assert body["Body"].read() == payload(8 * BS)[i * BS : (i + 1) * BS]

        def has(i: int) -> bool:
            return gw.gateway.cache.contains(BlockKey(r.ufs_uri, r.status.length, r.status.mtime_ms, i))

        wait_for(lambda: has(2) and has(3), "blocks 2 and 3 to be read ahead")
        assert not has(5)
        hits = gw.gateway.cache.stats.memory_hits
        body = s3.get_object(Bucket="metaproxy", Key="data/seq.bin", Range=f"bytes={2 * BS}-{4 * BS - 1}")
        assert body["Body"].read() == payload(8 * BS)[2 * BS : 4 * BS]
        assert gw.gateway.cache.stats.memory_hits == hits + 2  # both blocks were already there
    finally:
        gw.stop()


def test_a_long_sequential_scan_is_a_few_growing_ufs_reads(
    stack: dict[str, Any], tmp_path: Any, hdfs_dir: str
) -> None:
    """Read-ahead runs double while the reader stays sequential (2, 4, then 8 blocks with
    read_ahead_blocks = 2), so a scan is a handful of UFS streams, not one per block or two."""
    from test_gateway import _ufs_calls

    data = payload(24 * BS, seed=5)
    WebHdfs(stack["webhdfs"]).write(f"{hdfs_dir}/scan.bin", data)
    gw = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir, read_ahead_blocks=2)).start()
    try:
        s3 = client(gw.port)
        reads = _ufs_calls("read")
        for i in range(24):
            body = s3.get_object(
                Bucket="metaproxy", Key="data/scan.bin", Range=f"bytes={i * BS}-{(i + 1) * BS - 1}"
            )
            assert body["Body"].read() == data[i * BS : (i + 1) * BS]
        # block 0; then 1-3; 4-7; 8-15; 16-23 (fixed runs of two would be twelve reads)
        assert _ufs_calls("read") - reads <= 6
        assert gw.gateway.cache.stats.bytes_from_ufs == len(data)
    finally:
        gw.stop()


@pytest.mark.compat  # the table's partitions come from the HMS
def test_cache_load_of_a_hive_partition(stack: dict[str, Any], tpcds: dict[str, Any]) -> None:
    from metaproxy.hms import connect

    with connect(stack["hms"]) as c:
        name = sorted(c.get_partition_names("tpcds", "store_sales", -1))[7]
        location = c.get_partition_by_name("tpcds", "store_sales", name).sd.location
    from metaproxy.ufs.webhdfs import hdfs_path

    files = list(WebHdfs(stack["webhdfs"]).walk_files(hdfs_path(location)))
    total = sum(f.length for f in files)
    admin = f"http://{stack['gateway_admin'].split('://')[-1]}"
    out = run_cache(stack, admin, "load", "tpcds.store_sales", "--partition", name)
    assert f"loaded {len(files)} files" in out and total > 0
    assert "0 B fetched" in run_cache(stack, admin, "load", "tpcds.store_sales", "--partition", name)
    assert "tpcds.nope" in run_cache(stack, admin, "load", "tpcds.nope", ok=False)


def test_writes_land_on_the_create_target(
    stack: dict[str, Any], s3_client: Any, tmp_path: Any, hdfs_dir: str
) -> None:
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    s3_client.create_bucket(Bucket=bucket)
    cfg = parse_config(
        {
            "state": {"path": f"{tmp_path}/state.db"},
            "gateway": {
                "port": 0,
                "admin_port": 0,
                "access_key": "gw-key",
                "secret_key": "gw-secret",
                "block_size": BS,
                "disk": {"path": f"{tmp_path}/cache", "capacity": "16MiB"},
                "writable_mounts": ["/lake"],
                "stale_after": "1s",
            },
            "hdfs": {"webhdfs": stack["webhdfs"]},
            "s3": {
                "endpoint": stack["s3"],
                "region": stack["s3_region"],
                "access_key": stack["s3_access_key"],
                "secret_key": stack["s3_secret_key"],
            },
            "mount": [
                {
                    "path": "/lake",
                    "ufs": [f"{stack['hdfs']}{hdfs_dir}/lake", f"s3://{bucket}/lake"],
                    "read_priority": ["s3", "hdfs"],
                    "create_target": "s3",
                },
                {"path": "/ro", "ufs": f"{stack['hdfs']}{hdfs_dir}/ro"},
            ],
        },
        "test.toml",
    )
    fs = WebHdfs(stack["webhdfs"])
    fs.write(f"{hdfs_dir}/lake/t/old.bin", payload(BS))
    gw = GatewayServer(cfg).start()
    try:
        s3 = client(gw.port)
        s3.put_object(Bucket="metaproxy", Key="lake/t/new.bin", Body=payload(BS + 7, seed=3))
        got = s3_client.get_object(Bucket=bucket, Key="lake/t/new.bin")["Body"].read()
        assert got == payload(BS + 7, seed=3)  # on the create target, S3
        assert s3.get_object(Bucket="metaproxy", Key="lake/t/new.bin")["Body"].read() == got
        listed = s3.list_objects_v2(Bucket="metaproxy", Prefix="lake/t/")["Contents"]
        assert sorted(o["Key"] for o in listed) == ["lake/t/new.bin", "lake/t/old.bin"]
        # a file on both members: read priority s3,hdfs serves the S3 copy, listed once
        fs.write(f"{hdfs_dir}/lake/t/both.bin", b"from hdfs")
        s3_client.put_object(Bucket=bucket, Key="lake/t/both.bin", Body=b"from s3")
        time.sleep(1.2)  # written behind the gateway's back: listed once the bound has passed
        assert s3.get_object(Bucket="metaproxy", Key="lake/t/both.bin")["Body"].read() == b"from s3"
        listed = s3.list_objects_v2(Bucket="metaproxy", Prefix="lake/t/")["Contents"]
        assert [o["Key"] for o in listed].count("lake/t/both.bin") == 1
        s3.delete_object(Bucket="metaproxy", Key="lake/t/new.bin")
        with pytest.raises(botocore.exceptions.ClientError):
            s3_client.head_object(Bucket=bucket, Key="lake/t/new.bin")

        def code(fn: Any, **kw: Any) -> str:
            with pytest.raises(botocore.exceptions.ClientError) as e:
                fn(**kw)
            return str(e.value.response["Error"]["Code"])

        assert code(s3.put_object, Bucket="metaproxy", Key="ro/x.bin", Body=b"x") == "AccessDenied"
        assert code(s3.put_object, Bucket="metaproxy", Key="nomount/x.bin", Body=b"x") == "AccessDenied"
        assert code(s3.put_object, Bucket="metaproxy", Key="lake/../ro/x.bin", Body=b"x") == "AccessDenied"
        assert code(s3.create_multipart_upload, Bucket="metaproxy", Key="lake/t/m.bin") == "NotImplemented"
        assert not fs.exists(f"{hdfs_dir}/ro/x.bin")
        # a body that is not the one that was signed is refused, and nothing is written
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        url = f"http://127.0.0.1:{gw.port}/metaproxy/lake/t/forged.bin"
        req = AWSRequest("PUT", url, data=b"signed body")
        S3SigV4Auth(Credentials("gw-key", "gw-secret"), "s3", "us-east-1").add_auth(req)
        headers = dict(req.headers.items())
        resp = requests.put(url, data=b"forged body", headers=headers, timeout=10)
        assert resp.status_code == 400 and b"XAmzContentSHA256Mismatch" in resp.content
        with pytest.raises(botocore.exceptions.ClientError):
            s3_client.head_object(Bucket=bucket, Key="lake/t/forged.bin")
    finally:
        gw.stop()
