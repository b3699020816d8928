"""One UFS interface, the same checks on every implementation: WebHDFS on the stack's HDFS and
S3 on the stack's S3 server."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from metaproxy.config import S3Config
from metaproxy.ufs import Ufs, UfsError, UfsNotFound
from metaproxy.ufs.s3 import S3Ufs
from metaproxy.ufs.webhdfs import WebHdfs

pytestmark = pytest.mark.integration


def s3_ufs(stack: dict[str, Any]) -> S3Ufs:
    return S3Ufs(
        S3Config(
            endpoint=stack["s3"],
            region=stack["s3_region"],
            access_key=stack["s3_access_key"],
            secret_key=stack["s3_secret_key"],
        )
    )


@pytest.fixture(params=["hdfs", "s3"])
def ufs_root(request: pytest.FixtureRequest, stack: dict[str, Any]) -> Iterator[tuple[Ufs, str]]:
    tag = uuid.uuid4().hex[:8]
    if request.param == "hdfs":
        fs: Ufs = WebHdfs(stack["webhdfs"])
        root = f"{stack['hdfs']}/tmp/ufs-{tag}"
    else:
        s3 = s3_ufs(stack)
        s3.ensure_bucket(f"ufs-{tag}")
        fs, root = s3, f"s3://ufs-{tag}/root"
    yield fs, root
    fs.delete(root, recursive=True)


def test_write_stat_read_list_delete(ufs_root: tuple[Ufs, str]) -> None:
    fs, root = ufs_root
    data = bytes(range(256)) * 1000
    fs.write(f"{root}/d=1/a b%3A.bin", data)
    fs.write(f"{root}/d=1/c.bin", b"small")
    fs.write(f"{root}/top.bin", b"")
    st = fs.stat(f"{root}/d=1/a b%3A.bin")
    assert (st.path, st.length, st.is_dir) == (f"{root}/d=1/a b%3A.bin", len(data), False) and st.mtime_ms > 0
    assert fs.read(f"{root}/d=1/a b%3A.bin") == data
    assert fs.read(f"{root}/d=1/a b%3A.bin", 1000, 5000) == data[1000:6000]
    assert fs.read(f"{root}/d=1/c.bin", 3, 100) == b"ll"  # past the end: what there is
    assert [(s.path, s.is_dir) for s in fs.list(root)] == [(f"{root}/d=1", True), (f"{root}/top.bin", False)]
    assert [s.path for s in fs.walk_files(root)] == [
        f"{root}/d=1/a b%3A.bin",
        f"{root}/d=1/c.bin",
        f"{root}/top.bin",
    ]
    assert [(s.path, s.length) for s in fs.list_files(root)] == [
        ("d=1/a b%3A.bin", len(data)),
        ("d=1/c.bin", 5),
        ("top.bin", 0),
    ]
    assert fs.exists(f"{root}/top.bin") and not fs.exists(f"{root}/nothing")
    assert fs.delete(f"{root}/d=1/c.bin") and not fs.exists(f"{root}/d=1/c.bin")
    assert fs.list_files(f"{root}/no-such-dir") == []


def test_missing_files_are_not_found(ufs_root: tuple[Ufs, str]) -> None:
    fs, root = ufs_root
    with pytest.raises(UfsNotFound):
        fs.stat(f"{root}/missing.bin")
    with pytest.raises(UfsNotFound):
        fs.read(f"{root}/missing.bin", 0, 10)


def test_s3_checksums_multipart_and_prefixes(stack: dict[str, Any]) -> None:
    s3 = s3_ufs(stack)
    bucket = f"ufs-{uuid.uuid4().hex[:8]}"
    s3.ensure_bucket(bucket)
    s3.ensure_bucket(bucket)  # twice is fine
    data = b"x" * 100

    def sha(b: bytes) -> str:
        return base64.b64encode(hashlib.sha256(b).digest()).decode()

    s3.put(f"s3://{bucket}/a/one", data, sha(data))
    kept = s3.checksum(f"s3://{bucket}/a/one")  # S3 keeps the SHA-256 a PutObject carried
    assert kept.length == 100 and kept.sha256_b64 == sha(data)
    # a body that is not what its SHA-256 says is refused, and nothing is stored
    with pytest.raises(UfsError, match="BadDigest"):
        s3.put(f"s3://{bucket}/a/damaged", data, sha(b"y" * 100))
    assert not s3.exists(f"s3://{bucket}/a/damaged")
    part = b"p" * (5 * 1024 * 1024)
    up = s3.start_upload(f"s3://{bucket}/a/big")
    assert [u.upload_id for u in s3.uploads(f"s3://{bucket}/a")] == [up.upload_id]
    parts = [s3.upload_part(up, n, part, sha(part)) for n in (1, 2)]
    s3.complete_upload(up, parts)
    assert b"".join(s3.iter_object(f"s3://{bucket}/a/big", chunk=1 << 20)) == part * 2
    stale = s3.start_upload(f"s3://{bucket}/a/stale")
    s3.abort_upload(stale)
    assert s3.uploads(f"s3://{bucket}/a") == []
    assert s3.delete_prefix(f"s3://{bucket}/a") == 2 and s3.walk_files(f"s3://{bucket}/a") == []
    with pytest.raises(UfsNotFound, match="NoSuchBucket"):
        s3.put(f"s3://no-such-{bucket}/k", data)
