"""What the gateway's parts share about a file: a gateway key resolved to the UFS file
serving it, and what cache management needs of the gateway (:class:`FileSource`)."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Protocol

from metaproxy.cache.blocks import BlockKey, Lease, version_digest
from metaproxy.config import Config
from metaproxy.mounts import Mount, MountTable
from metaproxy.state import StateDB
from metaproxy.ufs import FileStatus, Ufs


@dataclass
class Resolved:
    """A gateway key resolved to the UFS file serving it."""

    mount: Mount
    ufs_uri: str
    status: FileStatus
    key: str = ""  # the gateway key: ``<mount name>/<rest>``

    @property
    def digest(self) -> str:
        """The file version's name in the cache."""
        return version_digest(self.ufs_uri, self.status.length, self.status.mtime_ms)

    def block(self, index: int) -> BlockKey:
        """The cache key of block ``index`` of this version of the file."""
        return BlockKey(self.ufs_uri, self.status.length, self.status.mtime_ms, index)


class FileSource(Protocol):
    """The gateway as cache management sees it: keys to files, and their blocks."""

    @property
    def config(self) -> Config: ...

    @property
    def mounts(self) -> MountTable: ...

    @property
    def ufs(self) -> Ufs: ...

    @property
    def pool(self) -> Executor: ...

    @property
    def db(self) -> StateDB: ...

    def resolve(self, key: str) -> Resolved: ...

    def block(self, r: Resolved, index: int) -> Lease: ...
