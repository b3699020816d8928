"""Copy one file from its source UFS to S3 and verify the copy.

* Files up to ``part_size`` go in one ``PutObject``; larger ones in a multipart upload whose
  parts are uploaded in parallel while the next ones are read, with at most ``parallelism``
  parts in memory at once across every file one copier is copying.
* A SHA-256 of the source is computed while it is read. Each request carries its own
  SHA-256 so S3 rejects a body damaged on the way.
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

from metaproxy.ufs import Ufs, UfsError, UfsNotFound
from metaproxy.ufs.s3 import S3Ufs, Upload


class SourceChanged(UfsError):
    """The source file changed (shorter, or gone) while it was being copied."""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class Copier:
    def __init__(self, source: Ufs, target: S3Ufs, part_size: int, parallelism: int) -> None:
        self.source = source
        self.target = target
        self.part_size = part_size
        self.parallelism = max(1, parallelism)
        self.pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix="migrate-part")
        #: parts read but not yet uploaded, across every file being copied: the memory bound
        self.slots = threading.Semaphore(self.parallelism)

    def close(self) -> None:
        self.pool.shutdown(wait=False)

    def _read(self, source: str, offset: int, n: int, what: str) -> bytes:
        try:
            data = self.source.read(source, offset, n) if n else b""
        except UfsNotFound as e:  # the source, not the target, is gone: a new attempt
            raise SourceChanged(f"{source}: the file is gone ({e})") from e
        if len(data) != n:
            raise SourceChanged(f"{source}: {what} short ({len(data)} of {n} bytes)")
        return data

    def copy(self, source: str, length: int, dest: str) -> str:
        """Copy ``source`` (a UFS URI of ``length`` bytes) to the S3 URI ``dest``; returns the
        hex SHA-256 of the bytes read."""
        if length <= self.part_size:
            data = self._read(source, 0, length, "the file is")
            digest = hashlib.sha256(data)
            self.target.put(dest, data, _b64(digest.digest()))
            return digest.hexdigest()
        upload = self.target.start_upload(dest)
        whole = hashlib.sha256()
        futures: list[Future[dict[str, Any]]] = []
        try:
            for number, offset in enumerate(range(0, length, self.part_size), start=1):
                n = min(self.part_size, length - offset)
                self.slots.acquire()
                try:
                    data = self._read(source, offset, n, f"part {number} is")
                except BaseException:
                    self.slots.release()
                    raise
                whole.update(data)
                futures.append(self.pool.submit(self._part, upload, number, data))
            self.target.complete_upload(upload, [f.result() for f in futures])
        except BaseException:
            for f in futures:
                f.cancel()
            with contextlib.suppress(Exception):  # else the stale-upload sweep gets it later
                self.target.abort_upload(upload)
            raise
        return whole.hexdigest()

    def _part(self, upload: Upload, number: int, data: bytes) -> dict[str, Any]:
        try:
            return self.target.upload_part(upload, number, data, _b64(hashlib.sha256(data).digest()))
        finally:
            self.slots.release()

    def verify(self, dest: str, length: int, sha256_hex: str) -> str:
        """'' when the S3 object ``dest`` holds exactly the bytes hashed, else why not."""
        try:
            kept = self.target.checksum(dest)
        except UfsNotFound as e:
            return f"the copy is missing ({e})"
        if kept.length != length:
            return f"the copy has {kept.length} bytes, the source {length}"
        if kept.sha256_b64 and kept.sha256_b64 == _b64(bytes.fromhex(sha256_hex)):
            return ""  # a whole-object checksum S3 computed itself matches
        # no checksum, or a composite one of a multipart upload (a checksum of part checksums,
        # spelled differently by different servers): read the copy back
        digest = hashlib.sha256()
        for chunk in self.target.iter_object(dest):
            digest.update(chunk)
        return "" if digest.hexdigest() == sha256_hex else "the copy read back differs from the source"
