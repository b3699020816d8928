"""The one prefix matcher: longest prefix by whole segments, any spelling, the rest kept as is."""

from __future__ import annotations

import pytest

from metaproxy.uri import PrefixMatcher, bucket_and_key

pytestmark = pytest.mark.unit


def test_longest_prefix_by_segment_and_the_rest_in_its_own_bytes() -> None:
    m = PrefixMatcher([("hdfs://nn:8020/w", "short"), ("hdfs://nn:8020/w/t", "long")])
    hit = m.match("hdfs://nn:8020/w/t/p=a%20b/f.parquet")
    assert hit is not None and (hit.value, hit.prefix, hit.rest) == (
        "long",
        "hdfs://nn:8020/w/t",
        "p=a%20b/f.parquet",
    )
    hit = m.match("hdfs://nn:8020/w/tt/f")  # "t" is not a prefix of the segment "tt"
    assert hit is not None and (hit.value, hit.rest) == ("short", "tt/f")
    assert m.match("hdfs://other/w/t") is None and m.match("not a uri") is None


@pytest.mark.parametrize(
    "location",
    [
        "hdfs://NN/w/t/f",  # host case
        "hdfs://nn:8020/w/t/f",  # the default port
        "hdfs://nn//w///t/f",  # repeated slashes
        "hdfs://nn/w/%74/f",  # an escaped unreserved character
    ],
)
def test_every_spelling_of_a_prefix_matches(location: str) -> None:
    m = PrefixMatcher([("hdfs://nn/w/t", 1), ("hdfs://nn:8020/w", 2)])
    hit = m.match(location)
    assert hit is not None and hit.value == 1 and hit.rest == "f"


def test_replace_and_bucket_and_key() -> None:
    m = PrefixMatcher([("hdfs://nn/w/t/d=1", "s3://b/t/d=1/a1")])
    assert m.replace("hdfs://nn/w/t/d=1/part-0.parquet") == "s3://b/t/d=1/a1/part-0.parquet"
    assert m.replace("hdfs://nn/w/t/d=1") == "s3://b/t/d=1/a1"
    assert m.replace("hdfs://nn/w/t/d=10") is None
    assert bucket_and_key("s3://b/a/b c") == ("b", "a/b c") and bucket_and_key("s3://b") == ("b", "")
