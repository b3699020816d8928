"""The cache gateway over real HDFS (WebHDFS), spoken to with boto3 as an S3 client."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config as BotoConfig

from metaproxy.cache.server import GatewayServer
from metaproxy.config import parse_config
from metaproxy.ufs.webhdfs import WebHdfs

pytestmark = pytest.mark.integration

BS = 64 * 1024


def gateway_config(stack: dict[str, Any], tmp: str, root: str, **gateway: Any) -> Any:
    return parse_config(
        {
            "state": {"path": f"{tmp}/state.db"},
            "gateway": {
                "port": 0,
                "bucket": "metaproxy",
                "access_key": "gw-key",
                "secret_key": "gw-secret",
                "block_size": BS,
                "stale_after": "1s",
                "admin_port": 0,
                "disk": {"path": f"{tmp}/cache", "capacity": "64MiB"},
                **gateway,
            },
            "hdfs": {"webhdfs": stack["webhdfs"]},
            "mount": [{"path": "/data", "ufs": f"{stack['hdfs']}{root}"}],
        },
        "test.toml",
    )


@pytest.fixture
def hdfs_dir(stack: dict[str, Any]) -> Iterator[str]:
    root = f"/tmp/gw-{uuid.uuid4().hex[:8]}"
    yield root
    WebHdfs(stack["webhdfs"]).delete(root, recursive=True)


def client(port: int, secret: str = "gw-secret") -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="gw-key",
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def gateway(stack: dict[str, Any], tmp_path: Any, hdfs_dir: str) -> Iterator[GatewayServer]:
    gw = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir)).start()
    yield gw
    gw.stop()


def payload(n: int, seed: int = 1) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


def test_head_get_range_and_list(stack: dict[str, Any], gateway: GatewayServer, hdfs_dir: str) -> None:
    fs = WebHdfs(stack["webhdfs"])
    data = payload(5 * BS + 123)
    fs.write(f"{hdfs_dir}/t/p=a b%3A/ü.bin", data)
    fs.write(f"{hdfs_dir}/t/p=2/x.bin", b"small")
    s3 = client(gateway.port)
    key = "data/t/p=a b%3A/ü.bin"
    head = s3.head_object(Bucket="metaproxy", Key=key)
    assert head["ContentLength"] == len(data)
    assert s3.get_object(Bucket="metaproxy", Key=key)["Body"].read() == data
    for start, end in ((0, 9), (BS - 5, BS + 5), (3 * BS, 5 * BS + 122), (len(data) - 1, len(data) + 100)):
        got = s3.get_object(Bucket="metaproxy", Key=key, Range=f"bytes={start}-{end}")
        assert got["Body"].read() == data[start : end + 1]
        assert got["ContentRange"] == f"bytes {start}-{min(end, len(data) - 1)}/{len(data)}"
    listed = s3.list_objects_v2(Bucket="metaproxy", Prefix="data/t/")
    assert sorted(o["Key"] for o in listed["Contents"]) == ["data/t/p=2/x.bin", key]
    dirs = s3.list_objects_v2(Bucket="metaproxy", Prefix="data/t/", Delimiter="/")
    assert sorted(p["Prefix"] for p in dirs["CommonPrefixes"]) == ["data/t/p=2/", "data/t/p=a b%3A/"]
    page = s3.list_objects_v2(Bucket="metaproxy", Prefix="data/t/", MaxKeys=1)
    assert page["IsTruncated"] and len(page["Contents"]) == 1
    rest = s3.list_objects_v2(
        Bucket="metaproxy", Prefix="data/t/", ContinuationToken=page["NextContinuationToken"]
    )
    assert [o["Key"] for o in page["Contents"] + rest["Contents"]] == sorted(["data/t/p=2/x.bin", key])
    assert s3.head_bucket(Bucket="metaproxy")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3.get_bucket_location(Bucket="metaproxy")["LocationConstraint"] == "us-east-1"
    stats = gateway.gateway.cache.stats
    assert stats.bytes_from_memory + stats.bytes_from_disk > 0  # the ranged reads hit the cache


def _ufs_calls(op: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("metaproxy_gateway_ufs_calls_total", {"ufs": "hdfs", "op": op}) or 0.0


def test_a_listing_spares_each_listed_file_its_stat(
    stack: dict[str, Any], tmp_path: Any, hdfs_dir: str
) -> None:
    """An engine lists a partition, then reads its files: across a slow link, one round trip
    per file saved. Statuses and listings stay fresh only for the consistency bound (here
    without the background refresh, so every UFS call is the reader's)."""
    gateway = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir, refresh_listings_for="0s")).start()
    try:
        _listing_spares_stats(stack, gateway, hdfs_dir)
    finally:
        gateway.stop()


def _listing_spares_stats(stack: dict[str, Any], gateway: GatewayServer, hdfs_dir: str) -> None:
    fs = WebHdfs(stack["webhdfs"])
    for i in range(3):
        fs.write(f"{hdfs_dir}/part/f{i}.bin", payload(1000 + i, seed=i))
    s3 = client(gateway.port)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="metaproxy", Prefix="data/part/")["Contents"])
    assert keys == [f"data/part/f{i}.bin" for i in range(3)]
    stats, lists = _ufs_calls("stat"), _ufs_calls("list")
    for i, key in enumerate(keys):
        assert s3.get_object(Bucket="metaproxy", Key=key)["Body"].read() == payload(1000 + i, seed=i)
    assert _ufs_calls("stat") == stats  # served on the listing's statuses
    again = s3.list_objects_v2(Bucket="metaproxy", Prefix="data/part/")["Contents"]
    assert sorted(o["Key"] for o in again) == keys
    assert _ufs_calls("list") == lists  # the listing itself is fresh within the bound
    fs.write(f"{hdfs_dir}/part/f3.bin", payload(10))
    time.sleep(1.2)  # past the bound (stale_after = 1s) files are stat'ed and listed again
    assert s3.get_object(Bucket="metaproxy", Key=keys[0])["Body"].read() == payload(1000, seed=0)
    assert _ufs_calls("stat") == stats + 1
    later = s3.list_objects_v2(Bucket="metaproxy", Prefix="data/part/")["Contents"]
    assert "data/part/f3.bin" in {o["Key"] for o in later}
    assert _ufs_calls("list") == lists + 1


def _refreshes() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("metaproxy_gateway_listing_refreshes_total", {"outcome": "ok"}) or 0.0


def test_listings_in_use_are_refreshed_before_they_go_stale(
    stack: dict[str, Any], tmp_path: Any, hdfs_dir: str
) -> None:
    """Queries that keep listing the same partitions find the listings fresh, re-read in the
    background, with no round trip on their path; the consistency bound holds all along; a
    listing nobody has asked for within refresh_listings_for is left to expire."""
    fs = WebHdfs(stack["webhdfs"])
    fs.write(f"{hdfs_dir}/hot/a.bin", payload(10))
    cfg = gateway_config(stack, str(tmp_path), hdfs_dir, stale_after="1s", refresh_listings_for="2s")
    gateway = GatewayServer(cfg).start()
    s3 = client(gateway.port)

    def keys() -> list[str]:
        return sorted(
            o["Key"] for o in s3.list_objects_v2(Bucket="metaproxy", Prefix="data/hot/")["Contents"]
        )

    def until(cond: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)

    try:
        assert keys() == ["data/hot/a.bin"]
        fs.write(f"{hdfs_dir}/hot/b.bin", payload(10))
        refreshed = _refreshes()
        until(lambda: _refreshes() > refreshed, "a background re-listing")  # at 75-87.5 % of 1 s
        lists = _ufs_calls("list")
        assert keys() == ["data/hot/a.bin", "data/hot/b.bin"]  # the new file, from the refresh
        assert _ufs_calls("list") == lists  # ... and no listing on the reader's path
        stats = _ufs_calls("stat")
        assert s3.get_object(Bucket="metaproxy", Key="data/hot/b.bin")["Body"].read() == payload(10)
        assert _ufs_calls("stat") == stats  # its status came with the refreshed listing
        time.sleep(2.5)  # nobody lists: past refresh_listings_for the refresh stops
        lists = _ufs_calls("list")
        time.sleep(1.0)
        assert _ufs_calls("list") == lists
        fs.write(f"{hdfs_dir}/hot/c.bin", payload(10))
        assert "data/hot/c.bin" in keys()  # expired, so re-listed on the reader's path
        assert _ufs_calls("list") == lists + 1
    finally:
        gateway.stop()


def test_large_blocks_go_out_with_sendfile_intact(
    stack: dict[str, Any], tmp_path: Any, hdfs_dir: str
) -> None:
    """Pieces of a block of 128 KiB and more leave from the block's memory file with sendfile,
    smaller ones as a copy: both exact, cold and warm, at every offset."""
    mib = 1024 * 1024
    data = payload(3 * mib + 4321, seed=9)
    WebHdfs(stack["webhdfs"]).write(f"{hdfs_dir}/big.bin", data)
    gw = GatewayServer(gateway_config(stack, str(tmp_path), hdfs_dir, block_size="1MiB")).start()
    try:
        s3 = client(gw.port)
        for _ in range(2):  # cold, then from the memory tier
            assert s3.get_object(Bucket="metaproxy", Key="data/big.bin")["Body"].read() == data
            for start, end in ((5, mib + 77), (mib - 10, 3 * mib + 100), (2 * mib + 1, 2 * mib + 200_000)):
                got = s3.get_object(Bucket="metaproxy", Key="data/big.bin", Range=f"bytes={start}-{end}")
                assert got["Body"].read() == data[start : end + 1]
        assert gw.gateway.cache.stats.bytes_from_ufs == len(data)
    finally:
        gw.stop()


def test_consecutive_misses_are_one_ufs_read(
    stack: dict[str, Any], gateway: GatewayServer, hdfs_dir: str
) -> None:
    """A cold read of many blocks is one WebHDFS read per run of missing blocks, not one per
    block; what comes back (sent from the memory tier's files with sendfile) is exact."""
    data = payload(12 * BS + 77, seed=3)
    WebHdfs(stack["webhdfs"]).write(f"{hdfs_dir}/seq.bin", data)
    s3 = client(gateway.port)
    reads = _ufs_calls("read")
    got = s3.get_object(Bucket="metaproxy", Key="data/seq.bin", Range=f"bytes=0-{5 * BS - 1}")
    assert got["Body"].read() == data[: 5 * BS]
    assert _ufs_calls("read") - reads == 1  # five blocks, one run
    reads = _ufs_calls("read")
    assert s3.get_object(Bucket="metaproxy", Key="data/seq.bin")["Body"].read() == data  # the rest
    assert _ufs_calls("read") - reads == 2  # eight more blocks: runs of five and three
    stats = gateway.gateway.cache.stats
    assert stats.bytes_from_ufs == len(data)  # every block fetched once


def test_errors_are_s3_errors(stack: dict[str, Any], gateway: GatewayServer, hdfs_dir: str) -> None:
    WebHdfs(stack["webhdfs"]).write(f"{hdfs_dir}/f.bin", payload(100))
    s3 = client(gateway.port)

    def code(fn: Any, **kw: Any) -> str:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            fn(**kw)
        return str(e.value.response["Error"]["Code"])

    assert code(s3.get_object, Bucket="metaproxy", Key="data/missing.bin") == "NoSuchKey"
    assert code(s3.get_object, Bucket="metaproxy", Key="nomount/f.bin") == "NoSuchKey"
    assert code(s3.get_object, Bucket="other", Key="data/f.bin") == "NoSuchBucket"
    assert code(s3.get_object, Bucket="metaproxy", Key="data/f.bin", Range="bytes=500-") == "InvalidRange"
    assert code(s3.put_object, Bucket="metaproxy", Key="data/new.bin", Body=b"x") == "AccessDenied"
    assert code(client(gateway.port, secret="wrong").get_object, Bucket="metaproxy", Key="data/f.bin") == (
        "SignatureDoesNotMatch"
    )
    base = f"http://127.0.0.1:{gateway.port}"
    assert requests.get(f"{base}/metaproxy/data/f.bin", timeout=5).status_code == 403  # unsigned
    # traversal in any encoding never leaves the mount (and is not even signed correctly here)
    for evil in ("data/../../etc/passwd", "data/%2e%2e/%2e%2e/etc/passwd", "data//etc"):
        assert code(s3.get_object, Bucket="metaproxy", Key=evil) in ("NoSuchKey", "AccessDenied")
    assert s3.get_object(Bucket="metaproxy", Key="data/f.bin")["Body"].read() == payload(100)


def test_rewritten_file_is_seen_after_the_bound(
    stack: dict[str, Any], gateway: GatewayServer, hdfs_dir: str
) -> None:
    fs = WebHdfs(stack["webhdfs"])
    fs.write(f"{hdfs_dir}/v.bin", payload(3 * BS, seed=1))
    s3 = client(gateway.port)
    first = s3.get_object(Bucket="metaproxy", Key="data/v.bin")
    assert first["Body"].read() == payload(3 * BS, seed=1)
    fs.write(f"{hdfs_dir}/v.bin", payload(3 * BS, seed=2))  # same length, new contents
    fs.set_times(f"{hdfs_dir}/v.bin", mtime_ms=int(time.time() * 1000) + 5000)
    time.sleep(1.2)  # the configured consistency bound (stale_after = 1s)
    second = s3.get_object(Bucket="metaproxy", Key="data/v.bin")
    assert second["Body"].read() == payload(3 * BS, seed=2)
    assert second["ETag"] != first["ETag"]


def test_disk_tier_stays_warm_across_a_restart(stack: dict[str, Any], tmp_path: Any, hdfs_dir: str) -> None:
    WebHdfs(stack["webhdfs"]).write(f"{hdfs_dir}/w.bin", payload(4 * BS))
    cfg = gateway_config(stack, str(tmp_path), hdfs_dir)
    gw = GatewayServer(cfg).start()
    try:
        assert client(gw.port).get_object(Bucket="metaproxy", Key="data/w.bin")["Body"].read() == payload(
            4 * BS
        )
    finally:
        gw.stop()
    gw = GatewayServer(cfg).start()
    try:
        assert client(gw.port).get_object(Bucket="metaproxy", Key="data/w.bin")["Body"].read() == payload(
            4 * BS
        )
        stats = gw.gateway.cache.stats
        assert stats.bytes_from_ufs == 0 and stats.bytes_from_disk == 4 * BS
    finally:
        gw.stop()


def test_unreachable_ufs_is_slow_down(stack: dict[str, Any], tmp_path: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = gateway_config({**stack, "webhdfs": f"http://127.0.0.1:{dead}"}, str(tmp_path), "/tmp/x")
    gw = GatewayServer(cfg).start()
    try:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            client(gw.port).get_object(Bucket="metaproxy", Key="data/f.bin")
        assert e.value.response["Error"]["Code"] == "SlowDown"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    finally:
        gw.stop()
