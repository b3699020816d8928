"""Under file systems (UFS): where bytes really live — HDFS through WebHDFS, and S3.

Everything above this package (the gateway's fetchers, the migration copier, the sample-data
loader) sees a UFS only through these small clients and their three errors, so a caller can
tell "this file is not there" from "the storage is unreachable right now" without knowing the
protocol.
"""

from __future__ import annotations

from dataclasses import dataclass


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
