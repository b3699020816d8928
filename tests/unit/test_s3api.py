"""The gateway's S3 protocol rules: SigV4 checked against botocore's signer, ranges, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from metaproxy.cache import s3api

pytestmark = pytest.mark.unit

KEYS = {"AKID": "secret"}


def signed(
    url: str, method: str = "GET", secret: str = "secret", region: str = "us-east-1"
) -> s3api.SignedRequest:
    req = AWSRequest(method=method, url=url, headers={"Range": "bytes=0-9"})
    req.context["payload_signing_enabled"] = False
    S3SigV4Auth(Credentials("AKID", secret), "s3", region).add_auth(req)
    parts = urlsplit(req.url)
    headers = {k.lower(): v for k, v in req.headers.items()}
    headers["host"] = parts.netloc
    return s3api.SignedRequest(method, parts.path, parts.query, headers)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9185/metaproxy/tpcds/store_sales/ss_sold_date_sk%3D1/part-0.parquet",
        "http://127.0.0.1:9185/metaproxy/tpcds/t/p%3Da%20b%253A/%C3%BC.parquet",
        "http://127.0.0.1:9185/metaproxy?list-type=2&prefix=tpcds%2Fitem%2F&delimiter=%2F&max-keys=10",
    ],
)
def test_botocore_signatures_verify(url: str) -> None:
    assert s3api.verify_sigv4(signed(url), KEYS, "us-east-1") == "AKID"


def test_bad_signatures_are_refused() -> None:
    url = "http://h/metaproxy/tpcds/item/part-0.parquet"
    with pytest.raises(s3api.SignatureDoesNotMatch):
        s3api.verify_sigv4(signed(url, secret="wrong"), KEYS, "us-east-1")
    tampered = signed(url)
    tampered = s3api.SignedRequest("GET", "/metaproxy/tpcds/other", tampered.raw_query, tampered.headers)
    with pytest.raises(s3api.SignatureDoesNotMatch):
        s3api.verify_sigv4(tampered, KEYS, "us-east-1")
    with pytest.raises(s3api.AccessDenied, match="not signed"):
        s3api.verify_sigv4(s3api.SignedRequest("GET", "/x", "", {"host": "h"}), KEYS, "us-east-1")
    with pytest.raises(s3api.InvalidAccessKeyId):
        s3api.verify_sigv4(signed(url), {"OTHER": "secret"}, "us-east-1")
    with pytest.raises(s3api.AccessDenied, match="region"):
        s3api.verify_sigv4(signed(url, region="eu-west-1"), KEYS, "us-east-1")
    with pytest.raises(s3api.RequestTimeTooSkewed):
        s3api.verify_sigv4(signed(url), KEYS, "us-east-1", now=datetime.now(UTC) + timedelta(hours=1))


@pytest.mark.parametrize(
    ("header", "length", "expected"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 10)),
        ("bytes=90-", 100, (90, 100)),
        ("bytes=90-500", 100, (90, 100)),
        ("bytes=-10", 100, (90, 100)),
        ("bytes=-500", 100, (0, 100)),
    ],
)
def test_ranges(header: str | None, length: int, expected: tuple[int, int] | None) -> None:
    assert s3api.parse_range(header, length) == expected


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ("bytes=100-", s3api.InvalidRange),
        ("bytes=-0", s3api.InvalidRange),
        ("bytes=0-1,5-6", s3api.InvalidArgument),
        ("bytes=9-3", s3api.InvalidArgument),
        ("items=0-1", s3api.InvalidArgument),
        ("bytes=-", s3api.InvalidArgument),
        ("bytes=99999999999999999999999-", s3api.InvalidRange),
    ],
)
def test_bad_ranges(header: str, error: type[s3api.S3Error]) -> None:
    with pytest.raises(error):
        s3api.parse_range(header, 100)


def test_error_xml_carries_the_code() -> None:
    body = s3api.NoSuchKey("no such key", "tpcds/x").xml("rid").decode()
    assert "<Code>NoSuchKey</Code>" in body and "<Resource>tpcds/x</Resource>" in body


def test_etag_changes_with_the_version() -> None:
    assert s3api.etag("p", 10, 1) != s3api.etag("p", 10, 2) != s3api.etag("p", 11, 2)
