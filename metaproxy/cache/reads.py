"""When each gateway key was last read, for ``unusedFor`` migration policies.

Reads are noted in memory on the data path and written to the state DB in batches
(:meth:`ReadLog.flush`, every few seconds), so serving a block never waits for a database.
"""

from __future__ import annotations

import threading
import time

from metaproxy.state import StateDB
from metaproxy.state.cache import record_reads

#: how often read times are written to the state DB
FLUSH_EVERY_S = 5.0


class ReadLog:
    def __init__(self, db: StateDB) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}

    def note(self, key: str) -> None:
        """Remember that ``key`` was read now."""
        with self._lock:
            self._pending[key] = time.time()

    def flush(self) -> None:
        """Write the read times noted since the last flush (kept for the next one when the
        state cannot be written now)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            record_reads(self.db, batch)
        except BaseException:
            with self._lock:
                for key, t in batch.items():
                    self._pending[key] = max(t, self._pending.get(key, t))
            raise
