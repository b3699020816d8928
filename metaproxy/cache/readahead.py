"""Read-ahead: which readers are sequential, and how far ahead of them to fetch.

A read that starts where the previous read of the same file version ended is sequential. Its
read-ahead first continues the reader's own run (the range being fetched reaches past its end),
then runs double — ``n``, ``2n``, ``4n``, up to ``4 × read_ahead_blocks`` — while the reader
stays sequential, so a long scan becomes a few UFS streams that barely overlap instead of many
short ones. A reader that jumps starts again at ``n``.

This object only decides; the gateway fetches (one UFS read per run).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

#: file versions whose last read is remembered
MAX_TRACKED = 4096


class ReadAhead:
    """Per file version: where its last read ended, and the length of its next run."""

    def __init__(self, blocks: int) -> None:
        self.blocks = max(0, blocks)
        self._lock = threading.Lock()
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()

    def after_read(self, version: str, start: int, end: int, length: int) -> int:
        """Note a read of ``[start, end)`` of a file version ``length`` bytes long; how many
        blocks past its end to read ahead: ``blocks`` if it continues the previous read of
        this version, else none."""
        n = self.blocks
        if n <= 0 or end >= length:
            return 0
        with self._lock:
            last_end, run = self._last.get(version, (-1, n))
            sequential = last_end == start
            self._last[version] = (end, run if sequential else n)
            self._last.move_to_end(version)
            while len(self._last) > MAX_TRACKED:
                self._last.popitem(last=False)
        return n if sequential else 0

    def take_run(self, version: str) -> int:
        """The length of the next read-ahead run for a sequential reader of ``version``, and
        double it for the one after (up to ``4 × blocks``)."""
        n = self.blocks
        with self._lock:
            last_end, run = self._last.get(version, (-1, n))
            if version in self._last:
                self._last[version] = (last_end, min(4 * n, 2 * run))
        return run
