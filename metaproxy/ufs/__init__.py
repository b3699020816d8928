"""Under file systems (UFS): where bytes really live — HDFS through WebHDFS, and S3.

Everything above this package (the gateway, the migration loop, the CLI) sees a UFS only
through :class:`Ufs` — stat, list, a ranged read, write, delete — and its three errors, so a
caller can tell "this file is not there" from "the storage is unreachable right now" without
knowing the protocol::

    UfsError                 refused or failed; retrying will not help (a bad request, a permission)
     ├── UfsNotFound         the file, directory or bucket does not exist
     └── UfsUnavailable      cannot be reached, timed out or a server error: the caller may retry

Every method takes a URI (``hdfs://nn:8020/a/b``, ``s3://bucket/a/b``; a WebHDFS client also
takes a plain ``/a/b``) and answers in the form it was asked: a status's ``path`` is the URI
given, a listing's children are that URI plus their names. :class:`UfsSet` holds one client
per scheme and picks by the URI, so most callers never name a scheme at all.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from metaproxy.uri import scheme_of

if TYPE_CHECKING:
    from metaproxy.config import HdfsConfig, S3Config
    from metaproxy.ufs.s3 import S3Ufs
    from metaproxy.ufs.webhdfs import WebHdfs


class UfsError(Exception):
    """A UFS refused or failed an operation."""


class UfsNotFound(UfsError):
    """The file or directory does not exist."""


class UfsUnavailable(UfsError):
    """The UFS cannot be reached or answered with a server error; the caller may retry."""


@dataclass(frozen=True)
class FileStatus:
    """What a UFS knows of one file or directory."""

    path: str
    length: int
    mtime_ms: int
    is_dir: bool = False


class Stream(Protocol):
    """A ranged read being received: into the caller's buffers (``readinto``, what the block
    cache does), or whole (``read``: up to ``n`` bytes, fewer only where the range ends)."""

    def readinto(self, buf: memoryview, /) -> int: ...

    def read(self, n: int, /) -> bytes: ...

    def close(self) -> None: ...


class Ufs(ABC):
    """One under file system."""

    @abstractmethod
    def stat(self, uri: str) -> FileStatus:
        """Length, modification time and kind of one file or directory."""

    @abstractmethod
    def list(self, uri: str) -> builtins.list[FileStatus]:
        """The direct children of a directory (a file lists as itself), sorted by path."""

    @abstractmethod
    def open_read(self, uri: str, start: int, length: int) -> Stream:
        """Bytes ``[start, start+length)`` of a file, as a stream the caller closes."""

    @abstractmethod
    def write(self, uri: str, data: bytes | Iterable[bytes]) -> None:
        """Write a whole file, replacing any file of that name."""

    @abstractmethod
    def delete(self, uri: str, recursive: bool = False) -> bool:
        """Delete a file (or, recursively, a directory); False if there was nothing there."""

    # -- built on the above -----------------------------------------------------------------

    def walk_files(self, uri: str) -> builtins.list[FileStatus]:
        """Every file below a directory, recursively (a file walks as itself), sorted by path."""
        out: builtins.list[FileStatus] = []
        todo = [uri]
        while todo:
            for st in self.list(todo.pop()):
                if st.is_dir:
                    todo.append(st.path)
                else:
                    out.append(st)
        return sorted(out, key=lambda s: s.path)

    def list_files(self, uri: str) -> builtins.list[FileStatus]:
        """Every file below a directory with its path relative to ``uri``; none if it is missing."""
        base = uri.rstrip("/")
        try:
            files = self.walk_files(base)
        except UfsNotFound:
            return []
        return [replace(f, path=f.path[len(base) + 1 :]) for f in files if f.path != base]

    def exists(self, uri: str) -> bool:
        try:
            self.stat(uri)
        except UfsNotFound:
            return False
        return True

    def read(self, uri: str, start: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[start, start+length)`` (to the end when ``length`` is None), in one buffer.

        Fewer bytes than asked for means the file is shorter than that now.
        """
        if length is None:
            length = max(0, self.stat(uri).length - start)
        if length == 0:
            return b""
        stream = self.open_read(uri, start, length)
        try:
            # one call: the HTTP client fills a bytes object of the full size in C, with no
            # Python loop and no copy afterwards (read into a buffer and copied was 25 % slower)
            return stream.read(length)
        finally:
            stream.close()


class UfsSet(Ufs):
    """The UFS clients of one process, one per scheme, each made when first needed; every call
    goes to the client of its URI's scheme and is reported to ``on_call(scheme, op)``."""

    def __init__(
        self,
        hdfs: HdfsConfig,
        s3: S3Config,
        on_call: Callable[[str, str], None] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s``: for every call, instead of the configured ones (the health probes')."""
        self._hdfs_config = hdfs
        self._s3_config = s3
        self._on_call = on_call
        self._timeout_s = timeout_s
        self._hdfs: WebHdfs | None = None
        self._s3: S3Ufs | None = None

    @property
    def hdfs(self) -> WebHdfs:
        if self._hdfs is None:
            from metaproxy.ufs.webhdfs import WebHdfs

            c = self._hdfs_config
            self._hdfs = WebHdfs(c.webhdfs, c.user, self._timeout_s or c.timeout_s)
        return self._hdfs

    @property
    def s3(self) -> S3Ufs:
        if self._s3 is None:
            from metaproxy.ufs.s3 import S3Ufs

            self._s3 = S3Ufs(self._s3_config, timeout_s=self._timeout_s)
        return self._s3

    def for_uri(self, uri: str, op: str = "") -> Ufs:
        """The client for ``uri``'s scheme (``hdfs`` and ``s3``; anything else is refused)."""
        scheme = scheme_of(uri)
        if op and self._on_call is not None:
            self._on_call(scheme, op)
        if scheme == "hdfs":
            return self.hdfs
        if scheme == "s3":
            return self.s3
        raise UfsError(f"{uri}: no UFS for scheme {scheme or '(none)'!r} (hdfs:// and s3:// are served)")

    def stat(self, uri: str) -> FileStatus:
        return self.for_uri(uri, "stat").stat(uri)

    def list(self, uri: str) -> builtins.list[FileStatus]:
        return self.for_uri(uri, "list").list(uri)

    def walk_files(self, uri: str) -> builtins.list[FileStatus]:
        return self.for_uri(uri, "list").walk_files(uri)

    def open_read(self, uri: str, start: int, length: int) -> Stream:
        return self.for_uri(uri, "read").open_read(uri, start, length)

    def write(self, uri: str, data: bytes | Iterable[bytes]) -> None:
        self.for_uri(uri, "write").write(uri, data)

    def delete(self, uri: str, recursive: bool = False) -> bool:
        return self.for_uri(uri, "delete").delete(uri, recursive)
