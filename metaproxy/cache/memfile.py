"""The memory tier's blocks: sealed memory files handed to readers as leases.

Each block in memory is a memory file (``memfd``) where the platform has them, filled once and
then sealed against any write or resize, so a sender can hand it to the kernel with
``sendfile`` — no copy through Python — and a block can never change under a reader. Where
there are no memory files (or the process is out of descriptors), a block is kept as bytes:
the cache never fails a read because of itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import mmap
import os
import threading
from collections.abc import Iterator

from crc32c import crc32c

from metaproxy.ufs import Stream

log = logging.getLogger("metaproxy.cache")


class BlockShort(OSError):
    """A UFS read ended before the block did: the file changed under the reader."""


def read_exactly(stream: Stream, buf: memoryview, what: str) -> None:
    """Fill ``buf`` from ``stream``; :class:`BlockShort` (naming ``what``) if it ends first."""
    got = 0
    while got < len(buf):
        n = stream.readinto(buf[got:])
        if not n:
            raise BlockShort(f"{what} ended {len(buf) - got} bytes early")
        got += n


#: memory files seal their blocks (no write, no resize) once filled
_SEALS = (
    getattr(fcntl, "F_SEAL_WRITE", 0) | getattr(fcntl, "F_SEAL_GROW", 0) | getattr(fcntl, "F_SEAL_SHRINK", 0)
)


def _new_memory_file(size: int) -> int | None:
    """An empty memory file of ``size`` bytes, or None where the platform has none (or the
    process is out of descriptors: the block is then kept as bytes — the cache never fails a
    read because of itself)."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create("metaproxy-block", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as e:
        log.debug("cache: no memory file for a block (%s); keeping it as bytes", e)
        return None
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        log.debug("cache: could not size a memory file (%s); keeping the block as bytes", e)
        return None
    return fd


def copy_file(src: int, dst: int, count: int, at: int) -> None:
    """``count`` bytes from the start of ``src`` to ``dst`` at ``at``, with ``sendfile``."""
    done = 0
    os.lseek(dst, at, os.SEEK_SET)
    while done < count:
        n = os.sendfile(dst, src, done, count - done)
        if n == 0:
            raise OSError(f"the block's memory file ended after {done} of {count} bytes")
        done += n


_scratch_local = threading.local()


#: the piece of a block received at a time (each reading thread keeps one such buffer)
RECEIVE_CHUNK = 1024 * 1024


def _scratch() -> memoryview:
    """This thread's receive buffer."""
    buf: bytearray | None = getattr(_scratch_local, "buf", None)
    if buf is None:
        buf = _scratch_local.buf = bytearray(RECEIVE_CHUNK)
    return memoryview(buf)


def _seal(fd: int) -> None:
    if _SEALS:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)


class Held:
    """One block in the memory tier: a sealed memory file, or bytes where there is none.

    Only the cache touches it, under its lock: it closes the descriptor on eviction, and hands
    readers :class:`Lease` objects that hold descriptors of their own.
    """

    __slots__ = ("crc", "data", "fd", "size")

    def __init__(
        self, size: int, fd: int | None, data: bytes | bytearray | None, crc: int | None = None
    ) -> None:
        self.size = size
        self.fd = fd
        self.data = data
        #: CRC-32C of the bytes when known (computed while they are fresh in the CPU's cache)
        self.crc = crc

    @classmethod
    def of(cls, data: bytes | bytearray) -> Held:
        """A held copy of ``data``."""
        fd = _new_memory_file(len(data))
        if fd is None:
            return cls(len(data), None, data)
        try:
            view = memoryview(data)
            at = 0
            while at < len(view):
                at += os.pwrite(fd, view[at:], at)
            _seal(fd)
        except OSError as e:
            os.close(fd)
            log.debug("cache: could not fill a memory file (%s); keeping the block as bytes", e)
            return cls(len(data), None, data)
        return cls(len(data), fd, None)

    @classmethod
    def received(cls, size: int, stream: Stream, what: str) -> Held:
        """A block of ``size`` bytes read from ``stream``: received a chunk at a time into a
        buffer of this thread's (reused, so its pages stay mapped and warm), checksummed there
        and copied into a memory file with ``pwrite``. Receiving into the memory file's own
        mapping cost more: mapping a fresh file faults in every page, under the GIL."""
        fd = _new_memory_file(size)
        if fd is None:
            data = bytearray(size)
            read_exactly(stream, memoryview(data), what)
            return cls(size, None, data, crc32c(data))
        try:
            scratch = _scratch()
            crc = at = 0
            while at < size:
                piece = scratch[: min(len(scratch), size - at)]
                read_exactly(stream, piece, what)
                crc = crc32c(piece, crc)
                done = 0
                while done < len(piece):
                    done += os.pwrite(fd, piece[done:], at + done)
                at += len(piece)
            _seal(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(size, fd, None, crc)

    def lease(self) -> Lease:
        if self.fd is None:
            assert self.data is not None
            return Lease(self.size, data=self.data, crc=self.crc)
        return Lease(self.size, file=io.FileIO(os.dup(self.fd), "rb", closefd=True), crc=self.crc)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Lease:
    """A reader's own hold on one block: valid until closed, whatever the cache evicts meanwhile.

    ``file`` (a descriptor of the block's sealed memory file, for ``sendfile``) or ``data``.
    Sealing matters: ``sendfile`` queues page references, not copies, so a block must never be
    rewritten in place while a socket may still be sending it — a sealed file cannot be, and an
    evicted block's pages live on until the last sender lets go of them.
    """

    __slots__ = ("crc", "data", "file", "size")

    def __init__(
        self,
        size: int,
        *,
        file: io.FileIO | None = None,
        data: bytes | bytearray | None = None,
        crc: int | None = None,
    ) -> None:
        self.size = size
        self.file = file
        self.data = data
        self.crc = crc

    def read(self) -> bytes:
        """The block's bytes (a copy out of its memory file)."""
        if self.data is not None:
            return bytes(self.data)
        assert self.file is not None
        return os.pread(self.file.fileno(), self.size, 0)

    def read_range(self, offset: int, count: int) -> bytes | memoryview:
        """``count`` bytes from ``offset`` of the block (a copy of just those)."""
        if self.data is not None:
            return memoryview(self.data)[offset : offset + count]
        assert self.file is not None
        return os.pread(self.file.fileno(), count, offset)

    @contextlib.contextmanager
    def view(self) -> Iterator[memoryview]:
        """The block's bytes in place, read-only, for as long as the ``with`` lasts."""
        if self.data is not None:
            yield memoryview(self.data)
            return
        assert self.file is not None
        if not self.size:
            yield memoryview(b"")
            return
        with mmap.mmap(self.file.fileno(), self.size, prot=mmap.PROT_READ) as mm:
            v = memoryview(mm)
            try:
                yield v
            finally:
                v.release()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
