"""Open connections to the upstream metastore, kept between client connections.

Engines open metastore connections freely (Trino opens one per call); across a wide-area link
each new TCP connection costs a round trip before its first byte. The proxy therefore keeps
its upstream connections open when a client goes, and hands them to the next call.

A connection carries state some calls leave on it: ``set_ugi`` (the user the HMS acts for) and
``setMetaConf``. A pooled connection is only reused for a client whose state calls were the
same (:attr:`Upstream.state` is the key); a client with state and no such connection in the
pool gets a fresh one with its state calls replayed first. A client that uses transactions or
locks keeps its connection to itself for its whole session (``sticky``) and it is closed, not
pooled, afterwards.

A connection idle longer than ``pool_check_after`` is checked with a cheap call before reuse;
one idle longer than ``pool_idle_timeout`` is closed. When the HMS is found not answering, the
calls still waiting on it are ended at once (:meth:`UpstreamPool.abort_stalled`): each is then
answered from the metadata cache or with a clear error, not after ``call_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

from metaproxy.config import MetastoreConfig
from metaproxy.proxy.metrics import POOL_EVENTS, POOL_IDLE
from metaproxy.proxy.upstream import Upstream, UpstreamUnavailable
from metaproxy.wire import binary

if TYPE_CHECKING:
    from metaproxy.security import Security

log = logging.getLogger("metaproxy.proxy")

#: calls whose effect stays with the connection: later calls on it see it
STATE_CALLS = frozenset({"set_ugi", "setMetaConf"})
#: calls that tie a client to its connection for the rest of its session
STICKY = re.compile(r"txn|lock|heartbeat|write_id|compact", re.IGNORECASE)

State = tuple[bytes, ...]


class UpstreamPool:
    """Idle upstream connections by state, shared by every client connection of a proxy."""

    def __init__(self, ms: MetastoreConfig, limit: int, security: Security | None = None) -> None:
        self.ms = ms
        self.limit = limit
        self.security = security
        self._lock = threading.Lock()
        #: state → idle connections, most recently used last
        self._idle: dict[State, deque[Upstream]] = {}
        self._count = 0
        #: connections handed out and not given back (their calls may be waiting on the HMS)
        self._out: weakref.WeakSet[Upstream] = weakref.WeakSet()

    def abort_stalled(self, stalled_for_s: float) -> int:
        """End every call that has heard nothing from the HMS for ``stalled_for_s``; how many."""
        now = time.monotonic()
        with self._lock:
            out = list(self._out)
        aborted = 0
        for up in out:
            since = up.waiting_since
            if since is not None and now - since >= stalled_for_s and up.abort():
                aborted += 1
        if aborted:
            POOL_EVENTS.labels("aborted").inc(aborted)
            log.warning("ended %d call(s) waiting on a metastore that does not answer", aborted)
        return aborted

    def _lend(self, up: Upstream) -> Upstream:
        with self._lock:
            self._out.add(up)
        return up

    def _new(self) -> Upstream:
        return Upstream(
            self.ms.uris, self.ms.connect_timeout_s, self.ms.call_timeout_s, self.security, self.limit
        )

    def acquire(self, state: State = (), fresh: bool = False) -> Upstream:
        """A connected upstream connection carrying ``state``: a pooled one when there is one
        (checked first if it idled long), else — or when ``fresh`` — a new one with the state
        calls replayed."""
        now = time.monotonic()
        while not fresh:
            with self._lock:
                idle = self._idle.get(state)
                up = idle.pop() if idle else None
                if up is not None:
                    self._count -= 1
                    POOL_IDLE.set(self._count)
            if up is None:
                break
            if up.lapsed():  # its Kerberos context ends: a new connection, with a new ticket
                POOL_EVENTS.labels("ticket_lapsed").inc()
                up.reset()
                continue
            if now - up.last_used > self.ms.pool_idle_timeout_s:
                POOL_EVENTS.labels("expired").inc()
                up.reset()
                continue
            if now - up.last_used > self.ms.pool_check_after_s and not self._healthy(up):
                POOL_EVENTS.labels("failed_check").inc()
                continue
            POOL_EVENTS.labels("reused").inc()
            up.reused = True
            return self._lend(up)
        up = self._lend(self._new())
        up.connect()
        POOL_EVENTS.labels("opened").inc()
        for call in state:
            self._replay(up, call)
        up.state = state
        return up

    def _healthy(self, up: Upstream) -> bool:
        try:
            up.server_version(self.limit)
            return True
        except UpstreamUnavailable:
            return False

    def _replay(self, up: Upstream, call: bytes) -> None:
        """Send a state call (a message body after its header; the name first) again."""
        name, _, body = call.partition(b"\0")
        up.call(binary.encode_header(name.decode(), binary.CALL, 0) + body, False, self.limit)

    def release(self, up: Upstream, reusable: bool = True) -> None:
        """Give a connection back: kept for the next client if it is healthy, else closed."""
        with self._lock:
            self._out.discard(up)
        if not reusable or up.sock is None or self.ms.pool_size == 0:
            up.reset()
            return
        up.last_used = time.monotonic()
        with self._lock:
            if self._count >= self.ms.pool_size:
                victim = self._oldest()
                if victim is not None:
                    POOL_EVENTS.labels("evicted").inc()
                    victim.reset()
            self._idle.setdefault(up.state, deque()).append(up)
            self._count += 1
            POOL_IDLE.set(self._count)

    def _oldest(self) -> Upstream | None:
        """Take out the least recently used idle connection (caller holds the lock)."""
        oldest_state = min(
            (s for s, q in self._idle.items() if q), key=lambda s: self._idle[s][0].last_used, default=None
        )
        if oldest_state is None:
            return None
        self._count -= 1
        return self._idle[oldest_state].popleft()

    def sweep(self) -> int:
        """Close connections idle longer than ``pool_idle_timeout``; how many."""
        now = time.monotonic()
        closed: list[Upstream] = []
        with self._lock:
            for q in self._idle.values():
                while q and now - q[0].last_used > self.ms.pool_idle_timeout_s:
                    closed.append(q.popleft())
            self._count -= len(closed)
            POOL_IDLE.set(self._count)
        for up in closed:
            POOL_EVENTS.labels("expired").inc()
            up.reset()
        return len(closed)

    def close(self) -> None:
        with self._lock:
            everything = [up for q in self._idle.values() for up in q]
            self._idle.clear()
            self._count = 0
            POOL_IDLE.set(0)
        for up in everything:
            with contextlib.suppress(Exception):
                up.reset()

    @property
    def idle(self) -> int:
        with self._lock:
            return self._count


def state_key(name: str, body: bytes) -> bytes:
    """How a state call is kept in a :data:`State`: its name, then its arguments' bytes."""
    return name.encode() + b"\0" + body
