"""One client connection of the proxy, and the proxy's error boundary.

Per call: read the whole request (walking it to find its end and its location strings) →
refuse it if it writes and writes are not allowed → rewrite its locations inbound → forward →
stream the reply back with its locations rewritten outbound. Bytes that are not locations are
never decoded and never changed; a method the proxy does not know is forwarded as is.

Error boundary: upstream replies (including Thrift exceptions) reach the client unchanged. The
proxy's own failures become a ``MetaException("metaproxy: …")`` when the method declares one,
else a ``TApplicationException``; a client that sends bytes that are not Thrift is disconnected.
Either way the other clients are not affected, and a request is forwarded only once it has been
read and rewritten completely. One audit line per call.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from metaproxy.config import ListenerConfig
from metaproxy.proxy.dialect import TRANSLATIONS, Untranslatable
from metaproxy.proxy.metacache import Key, cacheable, request_tags
from metaproxy.proxy.metrics import CALLS, CONNECTIONS, LATENCY, POOL_EVENTS, REWRITTEN, TRANSLATED
from metaproxy.proxy.pool import STATE_CALLS, STICKY, State, state_key
from metaproxy.proxy.shared import ProxyState
from metaproxy.proxy.upstream import (
    ClientGone,
    ConnectionClosed,
    Upstream,
    UpstreamBroken,
    UpstreamUnavailable,
    read_message,
)
from metaproxy.rewrite import RewriteError
from metaproxy.wire import binary, fields, schema
from metaproxy.wire.binary import CALL, ONEWAY, Malformed, MessageHeader, Scanned

log = logging.getLogger("metaproxy.proxy")
audit = logging.getLogger("metaproxy.audit")

CREATING = re.compile(r"^(create_|add_|append_)")


class Session:
    """One client connection, and the upstream connection each of its calls borrows from the
    pool (:mod:`~metaproxy.proxy.pool`)."""

    def __init__(
        self, state: ProxyState, listener: ListenerConfig, sock: Any, peer: str, principal: str = "-"
    ) -> None:
        self.state = state
        self.listener = listener
        #: a socket, or the TLS or SASL connection over one (the same methods)
        self.sock = sock
        self.peer = peer
        #: the client's Kerberos principal on a kerberos listener, else "-"
        self.principal = principal
        self.limit = state.config.proxy.max_message_bytes
        #: the upstream connection of the call under way, or the one this client keeps
        self.upstream: Upstream | None = None
        #: the state calls (set_ugi, setMetaConf) this client made: its connections carry them
        self.conn_state: State = ()
        #: keep one upstream connection for the whole session: without a pool, as before
        self.keep = state.config.metastore.pool_size == 0
        #: the client used transactions or locks: its connection is its own, and closed after
        self.txn = False
        #: the locks this client took through the proxy, by id, with the databases they named:
        #: ``unlock`` and ``heartbeat`` name only the id, and are allowed for these
        self.locks: dict[int, list[str]] = {}

    def serve(self) -> None:
        buf = bytearray()
        CONNECTIONS.labels(self.listener.profile).inc()
        try:
            while True:
                try:
                    req = read_message(self.sock, buf, self.state.request_schema, self.limit)
                except ConnectionClosed:
                    return
                except Malformed as e:
                    self._reject_malformed(buf, str(e))
                    return
                self.handle(req, buf)
                del buf[: req.end]
        except OSError as e:
            log.debug("client %s: %s", self.peer, e)
        finally:
            CONNECTIONS.labels(self.listener.profile).dec()
            if self.upstream is not None:
                self.state.pool.release(self.upstream, reusable=not self.txn)
                self.upstream = None
            with contextlib.suppress(OSError):
                self.sock.close()

    def _reject_malformed(self, buf: bytearray, why: str) -> None:
        """Answer a PROTOCOL_ERROR when the header was readable, then drop the connection."""
        CALLS.labels("<malformed>", "malformed").inc()
        audit.info(
            "client=%s principal=%s method=<malformed> outcome=malformed detail=%r",
            self.peer,
            self.principal,
            why[:200],
        )
        try:
            h = binary.parse_header(buf)
        except binary.WireError:
            return
        with contextlib.suppress(OSError):
            self.sock.sendall(
                binary.encode_application_exception(
                    h.name, h.seqid, binary.PROTOCOL_ERROR, f"metaproxy: malformed request: {why}"
                )
            )

    def _error_reply(self, h: MessageHeader, message: str, internal: bool = False) -> bytes:
        info = schema.method(h.name)
        if info is not None and info.meta_exception_fid is not None:
            return binary.encode_exception_reply(h.name, h.seqid, info.meta_exception_fid, message)
        kind = binary.INTERNAL_ERROR if internal else binary.UNKNOWN_METHOD
        return binary.encode_application_exception(h.name, h.seqid, kind, message)

    def handle(self, req: Scanned, buf: bytearray) -> None:
        """Answer one call (the request is ``buf[:req.end]``), and account for it."""
        h = req.header
        call = _Call(time.perf_counter())
        try:
            if h.mtype not in (CALL, ONEWAY):
                raise _Refused(f"metaproxy: expected a call, got message type {h.mtype}")
            call.dbs = self._check_write(h, req, buf)
            self._forward(h, req, buf, call)
        except (UpstreamBroken, ClientGone) as e:
            call.outcome, call.detail = "aborted", str(e)
            log.warning("client %s: %s", self.peer, e)
            raise OSError(str(e)) from e
        except _Refused as e:
            call.outcome, call.detail = "refused", str(e)
            self.sock.sendall(self._error_reply(h, str(e)))
        except UpstreamUnavailable as e:
            call.outcome, call.detail = "upstream_unavailable", str(e)
            log.warning("%s", e)
            self.sock.sendall(self._error_reply(h, f"metaproxy: {e}", internal=True))
        except Malformed as e:
            call.outcome, call.detail = "malformed", str(e)
            self.sock.sendall(self._error_reply(h, f"metaproxy: malformed message: {e}", internal=True))
        finally:
            self._account(h, req, call)

    def _check_write(self, h: MessageHeader, req: Scanned, buf: bytearray) -> list[str]:
        """The databases a write call names; :class:`_Refused` if writing is not allowed."""
        info = schema.method(h.name)
        if not (info.write if info else schema.is_write(h.name)):
            return []
        dbs: list[str] = []
        if info is not None:
            try:
                dbs = schema.database_names(info, bytes(buf[h.body_start : req.end]))
            except Exception as e:
                raise _Refused(f"metaproxy: cannot read the arguments of {h.name}: {e}") from None
        if not dbs and h.name in schema.LOCK_ID_CALLS:
            lockid = schema.requested_lock_id(h.name, bytes(buf[h.body_start : req.end]))
            dbs = self.locks.get(lockid, []) if lockid is not None else []
        refusal = self.state.write_refusal(h.name, dbs)
        if refusal:
            raise _Refused(refusal)
        return dbs

    def _forward(self, h: MessageHeader, req: Scanned, buf: bytearray, call: _Call) -> None:
        """Rewrite the request inbound, send it, stream the reply back rewritten outbound — or,
        for a call the upstream does not serve, its translation (:mod:`~metaproxy.proxy.dialect`)."""
        rewriter = self.state.rewriters[self.listener.profile]
        creating = bool(CREATING.match(h.name))

        def inbound(loc: str, kind: str) -> str | None:
            new = rewriter.inbound(loc, creating=creating, kind=kind)
            if new is not None and new != loc:
                call.rewritten_in += 1
            return new

        def outbound(loc: str, kind: str) -> str | None:
            new = rewriter.outbound(loc, kind)
            if new is not None and new != loc:
                call.rewritten_out += 1
            return new

        try:
            out = binary.splice(buf, req.end, req.spans, inbound) if req.spans else None
        except RewriteError as e:
            raise _Refused(f"metaproxy: {e}") from None
        request = out if out is not None else memoryview(buf)[: req.end]
        if STICKY.search(h.name):
            self.txn = True
        try:
            self._answer(h, request, outbound, call)
        finally:
            if isinstance(request, memoryview):
                request.release()

    def _answer(
        self,
        h: MessageHeader,
        request: bytes | memoryview,
        outbound: Callable[[str, str], str | None],
        call: _Call,
    ) -> None:
        """From the metadata cache when it holds a fresh answer; else upstream (the answer kept
        if the call may be cached); while the HMS does not answer, from the cache, stale, or an
        error at once."""
        cache, health = self.state.metacache, self.state.health
        key: Key | None = None
        if h.mtype == CALL and cacheable(h.name):
            key = (self.listener.profile, h.name, bytes(request[h.body_start :]), self.conn_state)
            hit = cache.get(key)
            if hit is not None:
                call.outcome = "cached"
                self._send(binary.encode_header(h.name, binary.REPLY, h.seqid) + hit.body)
                return
        down = health.down_since
        if down is not None:
            if key is not None and self._stale(h, key, down, call):
                return
            raise UpstreamUnavailable(
                f"no upstream HMS reachable: the metastore is {health.describe()}; "
                "only answers cached before the outage are served"
            )
        capture: list[bytes] | None = [] if key is not None or h.name == "lock" else None
        since = cache.generation()
        try:
            self._call_upstream(h, request, outbound, call, capture)
        except UpstreamUnavailable as e:
            if (
                key is not None
                and not isinstance(e, UpstreamBroken)
                and self._stale(h, key, time.monotonic(), call)
            ):
                return
            raise
        if h.name in ("lock", "unlock") and call.outcome == "ok":
            self._track_lock(h, request, capture)
        if key is not None and capture and call.outcome == "ok":
            message = b"".join(capture)
            header = binary.parse_header(message)
            tags = request_tags(h.name, key[2])
            if (
                cache.put(key, message[header.body_start :], tags, since)
                and self.state.warmup
                and not self.conn_state
            ):
                self.state.warmup.seen(self.listener.profile, h.name, key[2], tags)
        elif _writes(h.name):  # a write through the proxy: what it may have touched goes at once
            tags = request_tags(h.name, bytes(request[h.body_start :]))
            if ("", "") in tags:
                cache.flush(cause="write")
            for db, table in tags - {("", "")}:
                cache.invalidate(db, table, cause="write")

    def _track_lock(self, h: MessageHeader, request: bytes | memoryview, capture: list[bytes] | None) -> None:
        """Remember a lock this client took (with the databases its request named), forget one
        it released."""
        if h.name == "unlock":
            lockid = schema.requested_lock_id("unlock", bytes(request[h.body_start :]))
            if lockid is not None:
                self.locks.pop(lockid, None)
            return
        message = b"".join(capture or [])
        lockid = schema.granted_lock_id(message[binary.parse_header(message).body_start :])
        info = schema.method("lock")
        if lockid is not None and info is not None:
            self.locks[lockid] = schema.database_names(info, bytes(request[h.body_start :]))

    def _stale(self, h: MessageHeader, key: Key, down_since: float, call: _Call) -> bool:
        """Answer from the cache while the HMS does not (within ``stale_if_error``)."""
        entry = self.state.metacache.get_stale(key, down_since)
        if entry is None:
            return False
        call.outcome = "stale"
        self._send(binary.encode_header(h.name, binary.REPLY, h.seqid) + entry.body)
        return True

    def _call_upstream(
        self,
        h: MessageHeader,
        request: bytes | memoryview,
        outbound: Callable[[str, str], str | None],
        call: _Call,
        capture: list[bytes] | None,
    ) -> None:
        for retry in (False, True):
            up = self._borrow(fresh=retry)
            try:
                self._dispatch(h, request, outbound, call, capture)
            except UpstreamUnavailable as e:
                self._give_back(ok=False)
                # a pooled connection that the HMS closed meanwhile: a read goes again on a new
                # one (a write may have been done: it is not repeated)
                if (
                    retry
                    or not up.reused
                    or isinstance(e, UpstreamBroken)
                    or self.txn
                    or _writes(h.name)
                    or self.state.health.down_since is not None  # not closed: not answering
                ):
                    raise
                POOL_EVENTS.labels("retried").inc()
                if capture is not None:
                    capture.clear()
                continue
            except BaseException:
                self._give_back(ok=False)
                raise
            if h.name in STATE_CALLS and call.outcome == "ok":
                self.conn_state += (state_key(h.name, bytes(request[h.body_start :])),)
                up.state = self.conn_state
            self._give_back(ok=True)
            return

    def _borrow(self, fresh: bool) -> Upstream:
        """The upstream connection for this call: the one the client keeps, or one from the pool."""
        if self.upstream is not None and not fresh and not self.txn and self.upstream.lapsed():
            # a kept connection whose Kerberos context ends: the call goes on a new one
            POOL_EVENTS.labels("ticket_lapsed").inc()
            self.state.pool.release(self.upstream, reusable=False)
            self.upstream = None
        if self.upstream is None or fresh:
            self.upstream = self.state.pool.acquire(self.conn_state, fresh=fresh)
        return self.upstream

    def _give_back(self, ok: bool) -> None:
        """After a call: the connection goes back to the pool, unless the client keeps it (or
        it failed, and is closed)."""
        up = self.upstream
        if up is None or (ok and (self.keep or self.txn)):
            return
        self.upstream = None
        self.state.pool.release(up, reusable=ok)

    def _dispatch(
        self,
        h: MessageHeader,
        request: bytes | memoryview,
        outbound: Callable[[str, str], str | None],
        call: _Call,
        capture: list[bytes] | None = None,
    ) -> None:
        up = self.upstream
        assert up is not None
        if h.mtype == ONEWAY:
            up.call(request, True, self.limit)
            return
        if h.name in TRANSLATIONS:  # answered whole, so an "unknown method" never reaches the client
            self._bridged(h, request, outbound, call, capture)
            return
        reply = up.relay(
            request, self.sock, outbound, self.limit, reply_schema=self.state.reply_schema, capture=capture
        )
        if reply.mtype == binary.EXCEPTION:
            call.outcome = "upstream_exception"

    def _bridged(
        self,
        h: MessageHeader,
        request: bytes | memoryview,
        outbound: Callable[[str, str], str | None],
        call: _Call,
        capture: list[bytes] | None = None,
    ) -> None:
        """A call that has a translation: as it is while the upstream serves it; translated once
        the upstream is known not to (learned from its "unknown method" answer, then retried)."""
        dialects = self.state.dialects
        up = self.upstream
        assert up is not None
        up.connect()
        uri = up.uri or ""
        if dialects.version(uri) is None:
            dialects.probed(uri, up.server_version(self.limit))
        t = dialects.translation(uri, h.name)
        if t is None:
            scanned, rbuf = up.call(request, False, self.limit, self.state.reply_schema)
            if not _unknown_method(scanned, rbuf, self.limit):
                self._send_rewritten(scanned, rbuf, outbound, call, capture)
                return
            t = dialects.learn(uri, h.name)
            log.info(
                "upstream %s does not serve %s: translating it to %s from now on",
                uri,
                h.name,
                t and t.upstream,
            )
            assert t is not None
        call.translated = t.upstream
        TRANSLATED.labels(t.client, t.upstream).inc()
        try:
            args, _ = fields.split(request, h.body_start, self.limit)
            upstream_request = binary.encode_header(t.upstream, CALL, h.seqid) + t.request(args, self.limit)
        except Untranslatable as e:
            raise _Refused(f"metaproxy: {h.name} cannot be sent to {uri} as {t.upstream}: {e}") from None
        scanned, rbuf = up.call(upstream_request, False, self.limit, self.state.reply_schema)
        body = binary.splice(rbuf, scanned.end, scanned.spans, outbound) or bytes(rbuf[: scanned.end])
        rh = scanned.header
        if rh.mtype == binary.EXCEPTION:
            call.outcome = "upstream_exception"
            answer = binary.encode_header(h.name, binary.EXCEPTION, h.seqid) + body[rh.body_start :]
        else:
            result, _ = fields.split(body, rh.body_start, self.limit)
            if set(result) - {0}:
                call.outcome = "upstream_exception"
            undeclared = t.undeclared(result, self.limit)
            if undeclared is not None:
                answer = binary.encode_application_exception(
                    h.name, h.seqid, binary.INTERNAL_ERROR, undeclared
                )
            else:
                try:
                    answer = binary.encode_header(h.name, binary.REPLY, h.seqid) + t.reply(result, self.limit)
                except Untranslatable as e:
                    raise _Refused(
                        f"metaproxy: the answer to {t.upstream} cannot be given as {h.name}: {e}"
                    ) from None
        self._send(answer)
        if capture is not None:
            capture.append(answer)

    def _send_rewritten(
        self,
        scanned: Scanned,
        rbuf: bytearray,
        outbound: Callable[[str, str], str | None],
        call: _Call,
        capture: list[bytes] | None = None,
    ) -> None:
        body = binary.splice(rbuf, scanned.end, scanned.spans, outbound)
        answer = body if body is not None else bytes(rbuf[: scanned.end])
        self._send(answer)
        if capture is not None:
            capture.append(answer)
        if scanned.header.mtype == binary.EXCEPTION:
            call.outcome = "upstream_exception"

    def _send(self, data: bytes | memoryview) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ClientGone(str(e)) from e

    def _account(self, h: MessageHeader, req: Scanned, call: _Call) -> None:
        elapsed = time.perf_counter() - call.started
        CALLS.labels(h.name, call.outcome).inc()
        LATENCY.labels(h.name).observe(elapsed)
        if call.rewritten_in:
            REWRITTEN.labels("inbound").inc(call.rewritten_in)
        if call.rewritten_out:
            REWRITTEN.labels("outbound").inc(call.rewritten_out)
        audit.info(
            "client=%s profile=%s principal=%s method=%s%s dbs=%s outcome=%s ms=%.2f in=%d rewritten_in=%d rewritten_out=%d%s",
            self.peer,
            self.listener.profile,
            self.principal,
            h.name,
            f" as={call.translated}" if call.translated else "",
            ",".join(call.dbs) or "-",
            call.outcome,
            elapsed * 1000,
            req.end,
            call.rewritten_in,
            call.rewritten_out,
            f" detail={call.detail[:300]!r}" if call.detail else "",
        )


@dataclass
class _Call:
    """What one call did, for its metrics and audit line."""

    started: float
    outcome: str = "ok"
    detail: str = ""
    dbs: list[str] = field(default_factory=list)
    #: the method the call was sent upstream as, when it was translated
    translated: str = ""
    rewritten_in: int = 0
    rewritten_out: int = 0


def _unknown_method(scanned: Scanned, rbuf: bytearray, limit: int) -> bool:
    """True if a reply is a ``TApplicationException`` of type ``UNKNOWN_METHOD``: the upstream
    does not serve the method (and did nothing)."""
    if scanned.header.mtype != binary.EXCEPTION:
        return False
    try:
        exc, _ = fields.split(rbuf[: scanned.end], scanned.header.body_start, limit)
    except binary.WireError:
        return False
    kind = exc.get(2)
    return (
        kind is not None
        and kind.ttype == binary.I32
        and int.from_bytes(kind.value, "big") == binary.UNKNOWN_METHOD
    )


def _writes(method: str) -> bool:
    info = schema.method(method)
    return info.write if info is not None else schema.is_write(method)


class _Refused(Exception):  # noqa: N818
    """The proxy answers the call itself with this message."""
