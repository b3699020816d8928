"""ListObjectsV2 paging as a plain function: keys, common prefixes, max-keys, tokens, start-after."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from metaproxy.cache import s3api
from metaproxy.cache.listing import ListEntry, ListQuery, page, page_xml

pytestmark = pytest.mark.unit

NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}


def entries(*keys: str) -> list[ListEntry]:
    return [ListEntry(k, 10, 1_700_000_000_000, '"e"') for k in keys]


LAKE = entries(
    "t/d=1/a.parquet",
    "t/d=1/b.parquet",
    "t/d=2/a.parquet",
    "t/d=3/a.parquet",
    "t/top.parquet",
    "u/x.parquet",
)


def query(**params: str) -> ListQuery:
    return ListQuery.parse({k.replace("_", "-"): [v] for k, v in params.items()})


def every_page(q: ListQuery, items: list[ListEntry]) -> list[tuple[list[str], list[str]]]:
    out = []
    while True:
        p = page(items, q)
        out.append(([e.key for e in p.contents], p.prefixes))
        if not p.truncated:
            return out
        q = ListQuery(q.prefix, q.delimiter, q.max_keys, q.start_after, p.next_token)


def test_a_prefix_lists_keys_in_order() -> None:
    p = page(list(reversed(LAKE)), query(prefix="t/d=1/"))
    assert [e.key for e in p.contents] == ["t/d=1/a.parquet", "t/d=1/b.parquet"]
    assert not p.truncated and p.next_token == "" and p.prefixes == []


def test_a_delimiter_folds_directories_into_common_prefixes() -> None:
    p = page(LAKE, query(prefix="t/", delimiter="/"))
    assert p.prefixes == ["t/d=1/", "t/d=2/", "t/d=3/"]
    assert [e.key for e in p.contents] == ["t/top.parquet"]


def test_pages_cover_everything_once_and_never_split_a_common_prefix() -> None:
    pages = every_page(query(prefix="t/", delimiter="/", max_keys="2"), LAKE)
    assert pages == [([], ["t/d=1/", "t/d=2/"]), (["t/top.parquet"], ["t/d=3/"])]
    flat = every_page(query(max_keys="4"), LAKE)
    assert [k for keys, _ in flat for k in keys] == [e.key for e in LAKE]
    assert [len(keys) for keys, _ in flat] == [4, 2]


def test_start_after_and_max_keys_bounds() -> None:
    p = page(LAKE, query(start_after="t/d=3/a.parquet"))
    assert [e.key for e in p.contents] == ["t/top.parquet", "u/x.parquet"]
    assert query(max_keys="5000").max_keys == 1000
    assert query(max_keys="-3").max_keys == 0
    empty = page(LAKE, query(max_keys="0"))
    assert empty.contents == [] and empty.truncated


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"max_keys": "ten"}, "max-keys must be an integer"),
        ({"continuation_token": "%%%"}, "bad continuation token"),
    ],
)
def test_bad_parameters_are_invalid_arguments(params: dict[str, str], message: str) -> None:
    with pytest.raises(s3api.InvalidArgument, match=message):
        query(**params)


def test_the_page_document() -> None:
    q = query(prefix="t/", delimiter="/", max_keys="2", encoding_type="url")
    doc = ET.fromstring(page_xml("metaproxy", q, page(LAKE, q)))
    assert doc.findtext("s3:Name", namespaces=NS) == "metaproxy"
    assert doc.findtext("s3:KeyCount", namespaces=NS) == "2"
    assert doc.findtext("s3:IsTruncated", namespaces=NS) == "true"
    assert doc.findtext("s3:EncodingType", namespaces=NS) == "url"
    assert [e.text for e in doc.findall("s3:CommonPrefixes/s3:Prefix", NS)] == ["t/d%3D1/", "t/d%3D2/"]
    assert doc.findtext("s3:NextContinuationToken", namespaces=NS)
