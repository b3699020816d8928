"""Mount matching: normalised longest-prefix matching, exact round trips, no escapes from a mount."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaproxy.config import parse_config
from metaproxy.mounts import (
    MountError,
    MountTable,
    add_mount,
    key_is_safe,
    load_mount_table,
    make_mount,
    remove_mount,
)
from metaproxy.state import open_state
from metaproxy.uri import normalize_uri

pytestmark = pytest.mark.unit


@pytest.fixture
def table() -> MountTable:
    return MountTable(
        [
            make_mount("/tpcds", ["hdfs://NameNode:8020/warehouse/tpcds/"]),
            make_mount("/tpcds/deep", ["hdfs://namenode/warehouse/tpcds/x"]),
            make_mount("/lake", ["hdfs://namenode:9000/lake", "s3a://bucket/lake"], ["s3", "hdfs"], "s3"),
        ]
    )


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("HDFS://NN:8020/a/b/", "hdfs://nn/a/b"),
        ("hdfs://nn:9000//a///b", "hdfs://nn:9000/a/b"),
        ("hdfs://nn/a/%7euser/%2f", "hdfs://nn/a/~user/%2F"),
        ("s3a://bucket/k", "s3://bucket/k"),
        ("hdfs://nn/", "hdfs://nn"),
    ],
)
def test_normalize(uri: str, expected: str) -> None:
    assert normalize_uri(uri) == expected


@pytest.mark.parametrize(
    ("location", "mount", "rest"),
    [
        ("hdfs://namenode/warehouse/tpcds/t/p=1", "/tpcds", "t/p=1"),
        ("hdfs://namenode:8020/warehouse/tpcds", "/tpcds", ""),
        ("hdfs://NAMENODE:8020//warehouse//tpcds/t/", "/tpcds", "t"),
        ("hdfs://namenode/warehouse/tpcds/x/y", "/tpcds/deep", "y"),  # longest prefix wins
        ("hdfs://namenode/warehouse/tpcds/xy", "/tpcds", "xy"),  # segment boundary, not string prefix
        ("s3://bucket/lake/t", "/lake", "t"),
        ("hdfs://namenode:9000/lake/t", "/lake", "t"),
    ],
)
def test_match(table: MountTable, location: str, mount: str, rest: str) -> None:
    m = table.match_ufs(location)
    assert m is not None and m.mount.path == mount and m.rest == rest


@pytest.mark.parametrize(
    "location",
    [
        "hdfs://namenode/warehouse/tpcdsx",
        "hdfs://other/warehouse/tpcds/t",
        "hdfs://namenode:9000/warehouse/tpcds",
        "relative/path",
        "",
    ],
)
def test_no_match(table: MountTable, location: str) -> None:
    assert table.match_ufs(location) is None


@pytest.mark.parametrize(
    "rest", ["t/p=a b", "t/p=100%25/x", "t/dt=2020-01-01%3A00", "t/ünï/cödé", "t/a=b=c", "t/%"]
)
def test_rest_survives_round_trip(table: MountTable, rest: str) -> None:
    location = f"hdfs://namenode:8020/warehouse/tpcds/{rest}"
    key = table.gateway_key(location)
    assert key == f"tpcds/{rest}"
    resolved = table.resolve_key(key)
    assert resolved is not None
    mount, back = resolved
    # the mount's own spelling of the prefix comes back, the rest byte for byte
    assert table.ufs_location(mount, back) == f"hdfs://NameNode:8020/warehouse/tpcds/{rest}"


@pytest.mark.parametrize(
    "key",
    ["tpcds/../etc/passwd", "tpcds/./x", "tpcds//x", "/tpcds/x", "tpcds/a\\..\\b", "tpcds/x\x00", "..", ""],
)
def test_keys_cannot_escape(table: MountTable, key: str) -> None:
    assert not key_is_safe(key)
    assert table.resolve_key(key) is None


def test_unknown_key(table: MountTable) -> None:
    assert table.resolve_key("nomount/x") is None
    assert table.resolve_key("tpcdsx/y") is None


def test_union_mount(table: MountTable) -> None:
    lake = table.get("/lake")
    assert lake is not None and lake.is_union
    assert lake.read_order() == ["s3a://bucket/lake", "hdfs://namenode:9000/lake"]
    assert lake.create_ufs == "s3a://bucket/lake"


@pytest.mark.parametrize(
    ("path", "ufs", "prio", "target", "needle"),
    [
        ("/", ["hdfs://nn/x"], (), "", "absolute path"),
        ("/a/../b", ["hdfs://nn/x"], (), "", "absolute path"),
        ("/a", ["not a uri"], (), "", "not a UFS URI"),
        ("/a", ["hdfs://nn/x", "hdfs://nn/y"], (), "", "two members"),
        ("/a", ["hdfs://nn/x", "s3://b/x"], ("s3",), "", "read priority"),
        ("/a", ["hdfs://nn/x"], (), "s3", "create target"),
    ],
)
def test_bad_mounts(path: str, ufs: list[str], prio: tuple[str, ...], target: str, needle: str) -> None:
    with pytest.raises(MountError, match=needle):
        make_mount(path, ufs, prio, target)


def test_mounts_persist_in_state(tmp_path: Path) -> None:
    cfg = parse_config({"mount": [{"path": "/cfg", "ufs": "hdfs://nn/cfg"}]}, "t.toml", tmp_path)
    db = open_state(tmp_path / "state.db")
    add_mount(cfg, db, make_mount("/added", ["hdfs://nn/added"]))
    with pytest.raises(MountError, match="exists already"):
        add_mount(cfg, db, make_mount("/added", ["hdfs://nn/other"]))
    with pytest.raises(MountError, match="already mounted"):
        add_mount(cfg, db, make_mount("/again", ["hdfs://nn/added/"]))
    # a second connection (another process) sees it
    table = load_mount_table(cfg, open_state(tmp_path / "state.db"))
    assert [m.path for m in table] == ["/added", "/cfg"]
    with pytest.raises(MountError, match="declared in t.toml"):
        remove_mount(cfg, db, "/cfg")
    remove_mount(cfg, db, "/added")
    assert [m.path for m in load_mount_table(cfg, db)] == ["/cfg"]
