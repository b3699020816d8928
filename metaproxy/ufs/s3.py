"""S3 (or an S3-compatible store) as a UFS, and the only code in metaproxy that calls boto3.

Besides the :class:`~metaproxy.ufs.Ufs` operations it has what the migration loop's copier
needs and only S3 offers: uploads that carry their own SHA-256 (S3 rejects a body damaged on
the way), multipart uploads, the checksum S3 keeps for an object, and deleting or listing
everything under a prefix. Every botocore error becomes one of the UFS errors through
:func:`_translate`, with S3's own error code in the message.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from metaproxy.config import S3Config
from metaproxy.ufs import FileStatus, Stream, Ufs, UfsError, UfsNotFound, UfsUnavailable
from metaproxy.uri import bucket_and_key

#: S3 error codes that mean "there is nothing there"
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchUpload"})
#: codes worth retrying (besides every 5xx)
_RETRYABLE = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"})


def s3_client(c: S3Config, max_attempts: int = 3, timeout_s: float | None = None) -> Any:
    """A boto3 S3 client for the configured endpoint, region, keys and addressing style
    (``timeout_s``: for connecting and for each read; botocore's defaults otherwise)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=c.endpoint or None,
        region_name=c.region,
        aws_access_key_id=c.access_key or None,
        aws_secret_access_key=c.secret_key or None,
        config=BotoConfig(
            s3={"addressing_style": "path" if c.path_style else "auto"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            **({"connect_timeout": timeout_s, "read_timeout": timeout_s} if timeout_s else {}),
        ),
    )


def _translate(op: str, uri: str, e: Exception) -> UfsError:
    """A botocore error as a UFS error, S3's code and message kept."""
    import botocore.exceptions

    where = f"S3 {op} {uri}"
    if isinstance(e, botocore.exceptions.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{where}: {code}: {err.get('Message', '') or e}"
        if code in _MISSING or status == 404:
            return UfsNotFound(text)
        if status >= 500 or code in _RETRYABLE:
            return UfsUnavailable(text)
        return UfsError(text)
    return UfsUnavailable(f"{where}: {type(e).__name__}: {e}")


@contextmanager
def _errors(op: str, uri: str) -> Iterator[None]:
    import botocore.exceptions

    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
        raise _translate(op, uri, e) from e


class _Body:
    """An S3 object body read into caller-owned buffers (botocore hands out bytes: one copy)."""

    def __init__(self, body: Any, uri: str) -> None:
        self._body = body
        self._uri = uri

    def readinto(self, buf: memoryview, /) -> int:
        with _errors("GET", self._uri):
            data = self._body.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def read(self, n: int, /) -> bytes:
        with _errors("GET", self._uri):
            return bytes(self._body.read(n))

    def close(self) -> None:
        self._body.close()


@dataclass(frozen=True)
class ObjectChecksum:
    """An object's length and the whole-object SHA-256 S3 keeps for it (base64; '' if none)."""

    length: int
    sha256_b64: str


@dataclass(frozen=True)
class Upload:
    """A multipart upload in progress."""

    uri: str
    upload_id: str


class S3Ufs(Ufs):
    """S3 through one boto3 client (thread-safe), made when first needed."""

    def __init__(self, config: S3Config, client: Any = None, timeout_s: float | None = None) -> None:
        self.config = config
        self._client = client
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = s3_client(
                    self.config, max_attempts=1 if self._timeout_s else 3, timeout_s=self._timeout_s
                )
            return self._client

    # -- the UFS operations -------------------------------------------------------------------

    def stat(self, uri: str) -> FileStatus:
        bucket, key = bucket_and_key(uri)
        if not key or key.endswith("/"):
            return FileStatus(uri, 0, 0, is_dir=True)
        with _errors("HEAD", uri):
            h = self.client.head_object(Bucket=bucket, Key=key)
        return FileStatus(uri, int(h["ContentLength"]), int(h["LastModified"].timestamp() * 1000))

    def list(self, uri: str) -> builtins.list[FileStatus]:
        """Objects and common prefixes directly below ``uri``, as children."""
        bucket, key = bucket_and_key(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        base = uri.rstrip("/")
        out: builtins.list[FileStatus] = []
        with _errors("LIST", uri):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for cp in page.get("CommonPrefixes", []):
                    name = cp["Prefix"][len(prefix) :].rstrip("/")
                    out.append(FileStatus(f"{base}/{name}", 0, 0, is_dir=True))
                for o in page.get("Contents", []):
                    name = o["Key"][len(prefix) :]
                    if name:
                        out.append(
                            FileStatus(
                                f"{base}/{name}", int(o["Size"]), int(o["LastModified"].timestamp() * 1000)
                            )
                        )
        return sorted(out, key=lambda s: s.path)

    def walk_files(self, uri: str) -> builtins.list[FileStatus]:
        """Every object under ``uri`` (one flat listing, no per-directory round trips)."""
        bucket, key = bucket_and_key(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        base = uri.rstrip("/")
        out = []
        with _errors("LIST", uri):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    name = o["Key"][len(prefix) :]
                    if name and not name.endswith("/"):
                        out.append(
                            FileStatus(
                                f"{base}/{name}", int(o["Size"]), int(o["LastModified"].timestamp() * 1000)
                            )
                        )
        return sorted(out, key=lambda s: s.path)

    def open_read(self, uri: str, start: int, length: int) -> Stream:
        bucket, key = bucket_and_key(uri)
        with _errors("GET", uri):
            r = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
        return _Body(r["Body"], uri)

    def write(self, uri: str, data: bytes | Iterable[bytes]) -> None:
        self.put(uri, data if isinstance(data, bytes | bytearray) else b"".join(data))

    def delete(self, uri: str, recursive: bool = False) -> bool:
        if recursive:
            return self.delete_prefix(uri) > 0
        bucket, key = bucket_and_key(uri)
        existed = self.exists(uri)
        with _errors("DELETE", uri):
            self.client.delete_object(Bucket=bucket, Key=key)
        return existed

    # -- what the copier needs ------------------------------------------------------------------

    def put(self, uri: str, data: bytes, sha256_b64: str = "") -> None:
        """One PutObject; with a SHA-256, S3 checks the body against it and keeps it."""
        bucket, key = bucket_and_key(uri)
        extra = {"ChecksumSHA256": sha256_b64} if sha256_b64 else {}
        with _errors("PUT", uri):
            self.client.put_object(Bucket=bucket, Key=key, Body=data, **extra)

    def start_upload(self, uri: str) -> Upload:
        """A multipart upload whose parts each carry a SHA-256."""
        bucket, key = bucket_and_key(uri)
        with _errors("CreateMultipartUpload", uri):
            r = self.client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
        return Upload(uri, r["UploadId"])

    def upload_part(self, up: Upload, number: int, data: bytes, sha256_b64: str) -> dict[str, Any]:
        """Upload part ``number``; returns what completing the upload needs of it."""
        bucket, key = bucket_and_key(up.uri)
        with _errors("UploadPart", up.uri):
            r = self.client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=up.upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=sha256_b64,
            )
        part = {"PartNumber": number, "ETag": r["ETag"]}
        if r.get("ChecksumSHA256"):
            part["ChecksumSHA256"] = r["ChecksumSHA256"]
        return part

    def complete_upload(self, up: Upload, parts: builtins.list[dict[str, Any]]) -> None:
        bucket, key = bucket_and_key(up.uri)
        with _errors("CompleteMultipartUpload", up.uri):
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=up.upload_id, MultipartUpload={"Parts": parts}
            )

    def abort_upload(self, up: Upload) -> None:
        bucket, key = bucket_and_key(up.uri)
        with _errors("AbortMultipartUpload", up.uri):
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up.upload_id)

    def uploads(self, uri: str) -> builtins.list[Upload]:
        """Multipart uploads in progress under a prefix."""
        bucket, prefix = bucket_and_key(uri)
        with _errors("ListMultipartUploads", uri):
            r = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix.rstrip("/"))
        return [Upload(f"s3://{bucket}/{u['Key']}", u["UploadId"]) for u in r.get("Uploads", [])]

    def checksum(self, uri: str) -> ObjectChecksum:
        """The object's length and the SHA-256 S3 keeps for the whole object, if it keeps one."""
        bucket, key = bucket_and_key(uri)
        with _errors("HEAD", uri):
            h = self.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return ObjectChecksum(int(h["ContentLength"]), str(h.get("ChecksumSHA256", "") or ""))

    def iter_object(self, uri: str, chunk: int = 1024 * 1024) -> Iterator[bytes]:
        """A whole object, a chunk at a time (reading a copy back to verify it)."""
        bucket, key = bucket_and_key(uri)
        with _errors("GET", uri):
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            try:
                yield from iter(lambda: body.read(chunk), b"")
            finally:
                body.close()

    def delete_prefix(self, uri: str) -> int:
        """Delete every object under a prefix; how many there were."""
        bucket, prefix = bucket_and_key(uri)
        prefix = prefix.rstrip("/") + "/" if prefix else ""
        n = 0
        with _errors("DELETE", uri):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
                    n += len(keys)
        return n

    def ensure_bucket(self, bucket: str) -> None:
        """Create a bucket unless it exists (the local stack and the sample loader)."""
        with _errors("CreateBucket", f"s3://{bucket}"):
            try:
                self.client.head_bucket(Bucket=bucket)
            except Exception as e:
                if not isinstance(_translate("HEAD", bucket, e), UfsNotFound):
                    raise
                self.client.create_bucket(Bucket=bucket)
