"""Copy one file from HDFS (WebHDFS) to S3 and verify the copy.

* Files up to ``part_size`` go in one ``PutObject``; larger ones in a multipart upload whose
  parts are uploaded in parallel while the next ones are read, with at most ``parallelism``
  parts in memory at once across every file one copier is copying.
* A SHA-256 of the source is computed while it is read. Each request carries its own
  ``x-amz-checksum-sha256`` so S3 rejects a body damaged on the way.
* Verification compares the source's SHA-256 with the copy's: the checksum S3 reports when it
  keeps one for the whole object, otherwise a SHA-256 of the object read back. An ETag is never
  taken for an MD5.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from metaproxy.ufs import UfsError
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path


class SourceChanged(UfsError):
    """The source file's length changed while it was being copied."""


class CopyFailed(UfsError):
    """S3 refused or lost part of a copy."""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class Copier:
    def __init__(self, webhdfs: WebHdfs, s3: Any, part_size: int, parallelism: int) -> None:
        self.webhdfs = webhdfs
        self.s3 = s3
        self.part_size = part_size
        self.parallelism = max(1, parallelism)
        self.pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix="migrate-part")
        #: parts read but not yet uploaded, across every file being copied: the memory bound
        self.slots = threading.Semaphore(self.parallelism)

    def copy(self, source: str, length: int, bucket: str, key: str) -> str:
        """Copy ``source`` (an hdfs:// URI of ``length`` bytes) to ``s3://bucket/key``; returns
        the hex SHA-256 of the bytes read."""
        path = hdfs_path(source)
        if length <= self.part_size:
            data = self.webhdfs.read(path, 0, length) if length else b""
            if len(data) != length:
                raise SourceChanged(f"{source}: expected {length} bytes, read {len(data)}")
            digest = hashlib.sha256(data)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data, ChecksumSHA256=_b64(digest.digest()))
            return digest.hexdigest()
        upload = self.s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
        upload_id = upload["UploadId"]
        whole = hashlib.sha256()
        slots = self.slots
        futures: list[Future[dict[str, Any]]] = []
        try:
            for number, offset in enumerate(range(0, length, self.part_size), start=1):
                n = min(self.part_size, length - offset)
                slots.acquire()
                try:
                    data = self.webhdfs.read(path, offset, n)
                except BaseException:
                    slots.release()
                    raise
                if len(data) != n:
                    slots.release()
                    raise SourceChanged(f"{source}: part {number} short ({len(data)} of {n} bytes)")
                whole.update(data)
                futures.append(self.pool.submit(self._part, bucket, key, upload_id, number, data, slots))
            parts = [f.result() for f in futures]
            self.s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            for f in futures:
                f.cancel()
            with contextlib.suppress(Exception):  # else the stale-upload sweep gets it later
                self.s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise
        return whole.hexdigest()

    def _part(
        self, bucket: str, key: str, upload_id: str, number: int, data: bytes, slots: threading.Semaphore
    ) -> dict[str, Any]:
        try:
            digest = _b64(hashlib.sha256(data).digest())
            r = self.s3.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumSHA256=digest,
            )
            part = {"PartNumber": number, "ETag": r["ETag"]}
            if r.get("ChecksumSHA256"):
                part["ChecksumSHA256"] = r["ChecksumSHA256"]
            return part
        finally:
            slots.release()

    def verify(self, bucket: str, key: str, length: int, sha256_hex: str) -> str:
        """'' when ``s3://bucket/key`` holds exactly the bytes hashed, else why not."""
        import botocore.exceptions

        try:
            head = self.s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        except botocore.exceptions.ClientError as e:
            return f"the copy is missing ({e.response.get('Error', {}).get('Code')})"
        if int(head["ContentLength"]) != length:
            return f"the copy has {head['ContentLength']} bytes, the source {length}"
        reported = head.get("ChecksumSHA256", "")
        if reported and reported == _b64(bytes.fromhex(sha256_hex)):
            return ""  # a whole-object checksum S3 computed itself matches
        # no checksum, or a composite one of a multipart upload (a checksum of part checksums,
        # spelled differently by different servers): read the copy back
        digest = hashlib.sha256()
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in iter(lambda: body.read(1024 * 1024), b""):
            digest.update(chunk)
        return "" if digest.hexdigest() == sha256_hex else "the copy read back differs from the source"
