"""Location rules per profile, both ways; flips; union mounts; nothing invented reaches the HMS."""

from __future__ import annotations

import pytest

from metaproxy.mounts import MountTable, make_mount
from metaproxy.rewrite import PrefixMap, RewriteError, Rewriter

pytestmark = pytest.mark.unit

HDFS = "hdfs://nn:8020/warehouse"
MOUNTS = MountTable(
    [
        make_mount("/tpcds", [f"{HDFS}/tpcds"]),
        make_mount("/lake", [f"{HDFS}/lake", "s3://lake-bucket/lake"], ["s3", "hdfs"], "s3"),
    ]
)
FLIPS = {f"{HDFS}/tpcds/store_sales/d=1": "s3://migrated/tpcds/store_sales/d=1/attempt-3"}


def rw(profile: str, write_back: bool = False) -> Rewriter:
    return Rewriter.build(profile, MOUNTS, "metaproxy", FLIPS, write_back)


@pytest.mark.parametrize(
    ("profile", "location", "expected"),
    [
        ("cloud", f"{HDFS}/tpcds/item", "s3://metaproxy/tpcds/item"),
        ("cloud", "hdfs://NN/warehouse/tpcds/item/", "s3://metaproxy/tpcds/item"),
        ("cloud", f"{HDFS}/tpcds", "s3://metaproxy/tpcds"),
        ("cloud", f"{HDFS}/tpcds/t/p=a b%3A/ü", "s3://metaproxy/tpcds/t/p=a b%3A/ü"),
        ("cloud", f"{HDFS}/tpcds/store_sales/d=1", "s3://migrated/tpcds/store_sales/d=1/attempt-3"),
        ("cloud", f"{HDFS}/tpcds/store_sales/d=1/sub", "s3://migrated/tpcds/store_sales/d=1/attempt-3/sub"),
        ("cloud", f"{HDFS}/tpcds/store_sales/d=10", "s3://metaproxy/tpcds/store_sales/d=10"),
        ("cloud", f"{HDFS}/other/t", None),
        ("cloud", "s3://lake-bucket/lake/t", None),
        ("cloud", f"{HDFS}/lake/t", "s3://metaproxy/lake/t"),
        ("onprem", f"{HDFS}/tpcds/item", None),
        ("onprem", f"{HDFS}/tpcds/store_sales/d=1", "s3://migrated/tpcds/store_sales/d=1/attempt-3"),
        ("passthrough", f"{HDFS}/tpcds/item", None),
        ("passthrough", f"{HDFS}/tpcds/store_sales/d=1", None),
    ],
)
def test_outbound(profile: str, location: str, expected: str | None) -> None:
    assert rw(profile).outbound(location) == expected


def test_database_of_a_union_mount_points_at_its_create_target() -> None:
    assert rw("cloud").outbound(f"{HDFS}/lake/db", "db") == "s3://lake-bucket/lake/db"
    assert rw("cloud").outbound(f"{HDFS}/tpcds", "db") == "s3://metaproxy/tpcds"


@pytest.mark.parametrize("profile", ["cloud", "onprem", "passthrough"])
@pytest.mark.parametrize(
    ("location", "creating", "expected"),
    [
        ("s3://metaproxy/tpcds/item", False, f"{HDFS}/tpcds/item"),
        ("s3a://metaproxy/tpcds/t/p=a b%3A/ü", False, f"{HDFS}/tpcds/t/p=a b%3A/ü"),
        ("s3://metaproxy/lake/new", True, "s3://lake-bucket/lake/new"),
        ("s3://metaproxy/lake/old", False, f"{HDFS}/lake/old"),
        ("s3://migrated/tpcds/store_sales/d=1/attempt-3", False, f"{HDFS}/tpcds/store_sales/d=1"),
        (f"{HDFS}/tpcds/item", False, None),
        ("s3://some-other-bucket/x", False, None),
    ],
)
def test_inbound(profile: str, location: str, creating: bool, expected: str | None) -> None:
    assert rw(profile).inbound(location, creating=creating) == expected


@pytest.mark.parametrize(
    "location", ["s3://metaproxy/unmounted/x", "s3://metaproxy/tpcds/../etc", "s3://metaproxy/"]
)
def test_inbound_refuses_gateway_locations_outside_mounts(location: str) -> None:
    with pytest.raises(RewriteError, match="under no mount"):
        rw("cloud").inbound(location)


def test_write_back_keeps_migrated_locations() -> None:
    assert rw("cloud", write_back=True).inbound("s3://migrated/tpcds/store_sales/d=1/attempt-3") is None


def test_round_trip_through_cloud_profile() -> None:
    r = rw("cloud")
    for loc in [f"{HDFS}/tpcds/a/b=c d/%25/ü", f"{HDFS}/tpcds", f"{HDFS}/lake/x/y"]:
        out = r.outbound(loc)
        assert out is not None
        assert r.inbound(out) == loc


def test_prefix_map_is_segment_aware() -> None:
    m = PrefixMap({"hdfs://nn/a/b": "s3://x/y"})
    assert m.lookup("hdfs://nn/a/b") == "s3://x/y"
    assert m.lookup("hdfs://nn:8020/a/b/c") == "s3://x/y/c"
    assert m.lookup("hdfs://nn/a/bc") is None
    assert m.lookup("hdfs://other/a/b") is None


def test_database_names_map_both_ways() -> None:
    r = Rewriter.build("cloud", MOUNTS, "metaproxy", {}, db_map={"sales": "prod_sales"}, db_prefix="onprem_")
    assert r.outbound("tpcds", "dbname") == "onprem_tpcds"
    assert r.outbound("prod_sales", "dbname") == "sales"
    assert r.inbound("onprem_tpcds", kind="dbname") == "tpcds"
    assert r.inbound("sales", kind="dbname") == "prod_sales"
    assert r.inbound("tpcds", kind="dbname") is None  # real names keep working
    assert r.inbound("onprem_", kind="dbname") is None
    plain = Rewriter.build("passthrough", MOUNTS, "metaproxy", {})
    assert plain.outbound("tpcds", "dbname") is None and not plain.maps_databases
