"""The S3 wire protocol as the gateway speaks it: SigV4 checks, ranges, dates, ETags and
errors that carry their wire code.

Pure functions over strings and dicts — no sockets — so every rule here is unit-tested on its
own: the routes (:mod:`metaproxy.cache.routes`) only wire them to requests, and listings are
paged in :mod:`metaproxy.cache.listing`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape


class S3Error(Exception):
    """An S3 error response: HTTP status, S3 code, message."""

    status = 500
    code = "InternalError"

    def __init__(self, message: str, resource: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.resource = resource

    def xml(self, request_id: str = "") -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"<Resource>{escape(self.resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
        ).encode()


class AccessDenied(S3Error):
    status, code = 403, "AccessDenied"


class SignatureDoesNotMatch(S3Error):
    status, code = 403, "SignatureDoesNotMatch"


class InvalidAccessKeyId(S3Error):
    status, code = 403, "InvalidAccessKeyId"


class NoSuchKey(S3Error):
    status, code = 404, "NoSuchKey"


class NoSuchBucket(S3Error):
    status, code = 404, "NoSuchBucket"


class InvalidRange(S3Error):
    status, code = 416, "InvalidRange"


class InvalidArgument(S3Error):
    status, code = 400, "InvalidArgument"


class MethodNotAllowed(S3Error):
    status, code = 405, "MethodNotAllowed"


class NotImplementedS3(S3Error):
    status, code = 501, "NotImplemented"


class MissingContentLength(S3Error):
    status, code = 411, "MissingContentLength"


class BadDigest(S3Error):
    status, code = 400, "BadDigest"


class XAmzContentSHA256Mismatch(S3Error):
    status, code = 400, "XAmzContentSHA256Mismatch"


class EntityTooLarge(S3Error):
    status, code = 400, "EntityTooLarge"


class SlowDown(S3Error):
    status, code = 503, "SlowDown"


class RequestTimeTooSkewed(S3Error):
    status, code = 403, "RequestTimeTooSkewed"


# --------------------------------------------------------------------------------------------
# AWS Signature Version 4

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<sig>[0-9a-f]{64})\s*$"
)
MAX_SKEW_S = 15 * 60


def _uri_encode(s: str, safe: str) -> str:
    return quote(s, safe=safe)


def canonical_query(raw_query: str) -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((_uri_encode(unquote(k), "-_.~"), _uri_encode(unquote(v), "-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # the path exactly as sent (still percent-encoded), without the query
    raw_query: str
    headers: Mapping[str, str]  # lower-cased names


def verify_sigv4(
    req: SignedRequest, keys: Mapping[str, str], region: str, now: datetime | None = None
) -> str:
    """Check a header-signed request; returns the access key, or raises an S3Error."""
    auth = req.headers.get("authorization", "")
    if not auth:
        raise AccessDenied("request is not signed (AWS Signature Version 4 required)")
    m = _AUTH_RE.match(auth)
    if m is None:
        raise AccessDenied("unsupported or malformed Authorization header (expected AWS4-HMAC-SHA256)")
    cred = m.group("cred").split("/")
    if len(cred) != 5 or cred[3] != "s3" or cred[4] != "aws4_request":
        raise AccessDenied("malformed credential scope")
    access_key, date, cred_region = cred[0], cred[1], cred[2]
    secret = keys.get(access_key)
    if secret is None:
        raise InvalidAccessKeyId("the access key is not known to this gateway")
    if cred_region != region:
        raise AccessDenied(f"credential scope region {cred_region!r} is not this gateway's ({region!r})")
    amz_date = req.headers.get("x-amz-date", "")
    when = _amz_date(amz_date)
    if when is None:
        raise AccessDenied("missing or malformed x-amz-date")
    if not amz_date.startswith(date):
        raise AccessDenied("x-amz-date does not match the credential date")
    now = now or datetime.now(UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_S:
        raise RequestTimeTooSkewed(
            "the difference between the request time and the server's time is too large"
        )
    signed = m.group("signed").split(";")
    if "host" not in signed:
        raise AccessDenied("the host header must be signed")
    canonical_headers = ""
    for name in signed:
        if name not in req.headers:
            raise AccessDenied(f"signed header {name!r} is missing")
        value = " ".join(req.headers[name].strip().split())
        canonical_headers += f"{name}:{value}\n"
    payload = req.headers.get("x-amz-content-sha256", "")
    if not payload:
        raise AccessDenied("missing x-amz-content-sha256")
    canonical = "\n".join(
        [
            req.method,
            req.raw_path or "/",
            canonical_query(req.raw_query),
            canonical_headers,
            ";".join(signed),
            payload,
        ]
    )
    scope = f"{date}/{cred_region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    expected = hmac.new(_signing_key(secret, date, cred_region), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, m.group("sig")):
        raise SignatureDoesNotMatch("the request signature does not match (check the secret key)")
    return access_key


_AMZ_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def _amz_date(text: str) -> datetime | None:
    """``20261125T134501Z`` as a UTC datetime, or None (strptime cost more than the signature)."""
    m = _AMZ_DATE_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _signing_key(secret: str, date: str, region: str) -> bytes:
    """The SigV4 signing key of one day and region: four HMACs, the same all day."""
    k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def check_payload(headers: Mapping[str, str], body: bytes) -> None:
    """The body of a signed write must be the one that was signed (and match Content-MD5)."""
    declared = headers.get("x-amz-content-sha256", "")
    if declared.startswith("STREAMING-"):
        raise NotImplementedS3(f"{declared} (aws-chunked) uploads are not supported; send a signed payload")
    if declared != "UNSIGNED-PAYLOAD" and not hmac.compare_digest(declared, hashlib.sha256(body).hexdigest()):
        raise XAmzContentSHA256Mismatch("the body does not match x-amz-content-sha256")
    md5 = headers.get("content-md5")
    if md5 is not None:
        import base64

        if not hmac.compare_digest(md5.strip(), base64.b64encode(hashlib.md5(body).digest()).decode()):
            raise BadDigest("the body does not match Content-MD5")


# --------------------------------------------------------------------------------------------
# ranges

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, length: int) -> tuple[int, int] | None:
    """A single ``Range`` header → half-open ``(start, end)``; None for the whole object.

    Multiple ranges are refused (S3 ignores them; we say so). An unsatisfiable range raises
    :class:`InvalidRange` (416).
    """
    if header is None or header.strip() == "":
        return None
    h = header.strip()
    if "," in h:
        raise InvalidArgument("multiple ranges are not supported")
    m = _RANGE_RE.match(h)
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        raise InvalidArgument(f"malformed Range header {header!r}")
    first, last = m.group(1), m.group(2)
    if first == "":
        n = int(last)
        if n == 0:
            raise InvalidRange("the requested range is not satisfiable")
        return max(0, length - n), length
    start = int(first)
    if start >= length:
        raise InvalidRange("the requested range is not satisfiable")
    end = length if last == "" else min(length, int(last) + 1)
    if end <= start:
        raise InvalidArgument(f"malformed Range header {header!r}")
    return start, end


@functools.lru_cache(maxsize=4096)
def http_date(ts_ms: int) -> str:
    return formatdate(ts_ms / 1000, usegmt=True)


@functools.lru_cache(maxsize=4096)
def iso_date(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@functools.lru_cache(maxsize=4096)
def etag(path: str, length: int, mtime_ms: int) -> str:
    """An ETag that changes whenever the file version (length, mtime) changes."""
    return (
        '"' + hashlib.md5(f"{path}\0{length}\0{mtime_ms}".encode(), usedforsecurity=False).hexdigest() + '"'
    )
