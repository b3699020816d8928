"""The gateway's error boundary as a plain function: every failure becomes an S3 error."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from metaproxy.cache import s3api
from metaproxy.cache.memfile import BlockShort
from metaproxy.cache.middleware import error_response
from metaproxy.ufs import UfsError, UfsNotFound, UfsUnavailable

pytestmark = pytest.mark.unit


def code(resp_body: bytes) -> str:
    return ET.fromstring(resp_body).findtext("Code") or ""


@pytest.mark.parametrize(
    ("error", "status", "s3_code"),
    [
        (s3api.NoSuchBucket("no such bucket", "b"), 404, "NoSuchBucket"),
        (s3api.SignatureDoesNotMatch("bad"), 403, "SignatureDoesNotMatch"),
        (s3api.InvalidRange("no"), 416, "InvalidRange"),
        (UfsNotFound("gone"), 404, "NoSuchKey"),
        (UfsUnavailable("WebHDFS down"), 503, "SlowDown"),
        (UfsError("refused"), 503, "SlowDown"),
        (BlockShort("block 3 of f ended 10 bytes early"), 503, "SlowDown"),
        (ZeroDivisionError("a bug"), 500, "InternalError"),
    ],
)
def test_failures_become_s3_errors(error: Exception, status: int, s3_code: str) -> None:
    resp = error_response(error, "GET", "rid-1", "/metaproxy/k")
    assert resp.status == status
    assert resp.headers["x-amz-request-id"] == "rid-1"
    assert resp.body is not None and code(bytes(resp.body)) == s3_code  # type: ignore[arg-type]
    assert ET.fromstring(bytes(resp.body)).findtext("RequestId") == "rid-1"  # type: ignore[arg-type]


def test_head_errors_carry_no_body() -> None:
    resp = error_response(UfsNotFound("gone"), "HEAD", "rid-2")
    assert resp.status == 404 and not resp.body


def test_the_ufs_message_reaches_the_client() -> None:
    resp = error_response(UfsUnavailable("WebHDFS OPEN /a: connection refused"), "GET", "r")
    message = ET.fromstring(bytes(resp.body)).findtext("Message") or ""  # type: ignore[arg-type]
    assert "connection refused" in message and "retry" in message
