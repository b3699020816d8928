"""SASL GSSAPI (Kerberos) over a Thrift connection, both ends: what the Hive Metastore and its
clients (Trino, Hive, Spark) speak when ``hive.metastore.sasl.enabled`` is on.

The handshake is Thrift's SASL transport: each negotiation message is one status byte
(:data:`START`, :data:`OK`, :data:`BAD`, :data:`ERROR`, :data:`COMPLETE`), a 4-byte big-endian
length and a payload. The client opens with ``START "GSSAPI"`` and its first Kerberos token;
tokens go back and forth until the GSS-API context is established; then, as RFC 4752 lays down,
the server sends a wrapped 4-byte offer (a bit mask of the security layers it accepts —
:data:`LAYERS` — and the largest message it takes), the client answers with the one it chose
(and its own largest message), and the server ends with ``COMPLETE``.

After that every message travels in frames: a 4-byte length and a payload, the payload wrapped
(signed for ``auth-int``, encrypted for ``auth-conf``) unless the layer is ``auth``.
:class:`SaslSocket` does the framing behind the few socket methods the proxy uses (``recv``,
``sendall``, ``settimeout``, ``shutdown``, ``close``), so a session or an upstream connection
works on it as on a plain socket.

This module never logs a token or a key: errors name principals and reasons only.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Any

START, OK, BAD, ERROR, COMPLETE = 1, 2, 3, 4, 5
#: the security layers of RFC 4752 and their bit in the server's offer
LAYERS = {"auth": 1, "auth-int": 2, "auth-conf": 4}
#: strongest first: what a client picks among those offered
PREFERENCE = ("auth-conf", "auth-int", "auth")
#: the largest frame this side accepts (and says it accepts): 16 MiB - 1, the field's maximum
MAX_BUFFER = 0xFFFFFF
#: a negotiation message or a frame longer than this is not taken (a data frame may hold a
#: whole large reply, so frames are bounded by the proxy's message limit instead)
MAX_NEGOTIATION = 64 * 1024
MECHANISM = b"GSSAPI"


class SaslError(Exception):
    """Authentication failed or was refused; the message says why, for the peer and the log."""


class PlainThriftClient(SaslError):
    """A client spoke plain Thrift to a listener that wants SASL; ``data`` is what it sent."""

    def __init__(self, message: str, data: bytes) -> None:
        super().__init__(message)
        self.data = data


def _recv_exact(sock: Any, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed during SASL negotiation")
        buf += chunk
    return bytes(buf)


def send_message(sock: Any, status: int, payload: bytes = b"") -> None:
    """One negotiation message."""
    sock.sendall(struct.pack(">BI", status, len(payload)) + payload)


def recv_message(sock: Any) -> tuple[int, bytes]:
    """One negotiation message; :class:`SaslError` if the peer said BAD or ERROR."""
    head = _recv_exact(sock, 5)
    status, length = struct.unpack(">BI", head)
    if status not in (START, OK, BAD, ERROR, COMPLETE):
        raise SaslError(f"not a SASL negotiation message (status byte {status})")
    if length > MAX_NEGOTIATION:
        raise SaslError(f"SASL negotiation message of {length} bytes is too long")
    payload = _recv_exact(sock, length)
    if status in (BAD, ERROR):
        raise SaslError("peer refused the authentication: " + payload.decode("utf-8", "replace"))
    return status, payload


def layer_offer(layers: tuple[str, ...], max_buffer: int = MAX_BUFFER) -> bytes:
    """The 4 bytes of an offer (server) or a choice (client, one layer): mask and size."""
    mask = 0
    for name in layers:
        mask |= LAYERS[name]
    return bytes([mask]) + max_buffer.to_bytes(3, "big")


def parse_layers(data: bytes) -> tuple[tuple[str, ...], int, bytes]:
    """The layers, the largest message and the rest (an authorization id) of an offer or choice."""
    if len(data) < 4:
        raise SaslError(f"SASL security-layer message of {len(data)} bytes (expected at least 4)")
    mask = data[0]
    return tuple(n for n in PREFERENCE if mask & LAYERS[n]), int.from_bytes(data[1:4], "big"), data[4:]


def choose_layer(offered: tuple[str, ...], accepted: tuple[str, ...]) -> str:
    """The strongest of ``offered`` that this side accepts."""
    for name in PREFERENCE:
        if name in offered and name in accepted:
            return name
    raise SaslError(
        f"no common SASL quality of protection: the server offers {', '.join(offered) or 'none'}, "
        f"this side accepts {', '.join(accepted)}"
    )


class SaslSocket:
    """A connection after the handshake: frames out, frames in, wrapped per the layer.

    ``ctx`` is the GSS-API security context (anything with ``wrap(data, encrypt)`` and
    ``unwrap(data)``); ``principal`` the peer's (server side) or this side's (client side).
    """

    def __init__(
        self,
        sock: socket.socket,
        ctx: Any,
        layer: str,
        principal: str,
        peer_max: int = MAX_BUFFER,
        max_frame: int = 1 << 30,
        expires_at: float | None = None,
    ) -> None:
        self.sock = sock
        self.ctx = ctx
        self.layer = layer
        self.principal = principal
        self.peer_max = peer_max
        self.max_frame = max_frame
        #: when the Kerberos context ends (time.monotonic()), if known
        self.expires_at = expires_at
        self._in = bytearray()

    # -- framing -------------------------------------------------------------------------

    def _wrap(self, data: bytes) -> bytes:
        if self.layer == "auth":
            return data
        return bytes(self.ctx.wrap(data, self.layer == "auth-conf").message)

    def _unwrap(self, data: bytes) -> bytes:
        if self.layer == "auth":
            return data
        res = self.ctx.unwrap(data)
        if self.layer == "auth-conf" and not res.encrypted:
            raise SaslError("a frame arrived unencrypted on an auth-conf connection")
        return bytes(res.message)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        raw = bytes(data)
        # a wrapped frame may not exceed what the peer said it takes (the wrap adds at most
        # a few dozen bytes of header and checksum)
        step = max(1024, self.peer_max - 128) if self.layer != "auth" and self.peer_max else len(raw) or 1
        out = bytearray()
        for i in range(0, len(raw), step):
            frame = self._wrap(raw[i : i + step])
            out += struct.pack(">I", len(frame)) + frame
        self.sock.sendall(out)

    def recv(self, n: int) -> bytes:
        """Up to ``n`` bytes; b"" only when the peer closed the connection (an empty frame is
        read past, as it carries nothing)."""
        while not self._in:
            head = self.sock.recv(4)
            if not head:
                return b""
            if len(head) < 4:
                head += _recv_exact(self.sock, 4 - len(head))
            (length,) = struct.unpack(">I", head)
            if length > self.max_frame:
                raise OSError(f"SASL frame of {length} bytes is larger than the limit")
            if length:
                self._in += self._unwrap(_recv_exact(self.sock, length))
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    # -- what the proxy uses of a socket -------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def setsockopt(self, *args: Any) -> None:
        self.sock.setsockopt(*args)

    def shutdown(self, how: int) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def fileno(self) -> int:
        return self.sock.fileno()


# -- GSS-API ends ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerPolicy:
    """What a kerberos listener accepts."""

    #: the layers it offers
    layers: tuple[str, ...] = ("auth-conf", "auth-int", "auth")
    #: the principals it serves; empty: every principal of the realm(s) the keytab trusts
    principals: tuple[str, ...] = ()


def _deadline(ctx: Any) -> float | None:
    import time

    try:
        return time.monotonic() + float(ctx.lifetime)
    except Exception:
        return None


def client_handshake(
    sock: socket.socket,
    service: str,
    creds: Any,
    accepted: tuple[str, ...] = PREFERENCE,
    max_frame: int = 1 << 30,
) -> SaslSocket:
    """Authenticate to a SASL GSSAPI server as ``creds`` for ``service`` (a Kerberos principal,
    ``hive/host@REALM``); the connection after it. :class:`SaslError` when refused."""
    import gssapi

    try:
        name = gssapi.Name(service, gssapi.NameType.kerberos_principal)
        flags = (
            gssapi.RequirementFlag.mutual_authentication
            | gssapi.RequirementFlag.integrity
            | gssapi.RequirementFlag.confidentiality
        )
        ctx = gssapi.SecurityContext(name=name, creds=creds, usage="initiate", flags=flags)
        token = ctx.step()
    except gssapi.exceptions.GSSError as e:
        raise SaslError(f"cannot authenticate to {service}: {gss_reason(e)}") from None
    send_message(sock, START, MECHANISM)
    send_message(sock, OK, token or b"")
    try:
        while not ctx.complete:
            _, challenge = recv_message(sock)
            token = ctx.step(challenge)
            send_message(sock, OK, token or b"")
        _, offer = recv_message(sock)
        layers, peer_max, _ = parse_layers(bytes(ctx.unwrap(offer).message))
        layer = choose_layer(layers, accepted)
        send_message(sock, COMPLETE, bytes(ctx.wrap(layer_offer((layer,)), False).message))
        status, _ = recv_message(sock)
    except gssapi.exceptions.GSSError as e:
        raise SaslError(f"cannot authenticate to {service}: {gss_reason(e)}") from None
    if status != COMPLETE:
        raise SaslError(f"{service} did not complete the SASL negotiation (status {status})")
    me = str(creds.name) if creds is not None else ""
    return SaslSocket(sock, ctx, layer, me, peer_max if layer != "auth" else 0, max_frame, _deadline(ctx))


def server_handshake(
    sock: socket.socket, creds: Any, policy: ServerPolicy, max_frame: int = 1 << 30
) -> SaslSocket:
    """Authenticate a client of a kerberos listener; the connection after it, whose
    ``principal`` is the client's. The client is told why when it is refused
    (:class:`SaslError`); a client that spoke plain Thrift raises :class:`PlainThriftClient`."""
    import gssapi

    first = sock.recv(1)
    if not first:
        raise ConnectionError("client closed the connection before authenticating")
    if first[0] not in (START, OK, BAD, ERROR, COMPLETE):
        raise PlainThriftClient(
            "the client sent plain Thrift to a listener that requires Kerberos (SASL GSSAPI)", first
        )
    head = first + _recv_exact(sock, 4)
    status, length = struct.unpack(">BI", head)
    mech = _recv_exact(sock, min(length, MAX_NEGOTIATION))
    if status != START or mech != MECHANISM:
        _refuse(sock, f"only SASL GSSAPI (Kerberos) is accepted, not {mech[:40]!r}")
    try:
        ctx = gssapi.SecurityContext(creds=creds, usage="accept")
        while not ctx.complete:
            _, token = recv_message(sock)
            out = ctx.step(token)
            if ctx.complete and not out:
                break
            send_message(sock, OK, out or b"")
            if ctx.complete:
                recv_message(sock)  # the client's empty answer to the last token
        principal = str(ctx.initiator_name)
        send_message(sock, OK, bytes(ctx.wrap(layer_offer(policy.layers), False).message))
        _, answer = recv_message(sock)
        chosen, peer_max, authzid = parse_layers(bytes(ctx.unwrap(answer).message))
    except gssapi.exceptions.GSSError as e:
        _refuse(sock, f"Kerberos authentication failed: {gss_reason(e)}")
    if len(chosen) != 1 or chosen[0] not in policy.layers:
        _refuse(sock, f"the client chose no security layer this listener offers ({', '.join(policy.layers)})")
    if authzid and authzid.decode("utf-8", "replace") != principal:
        _refuse(sock, f"{principal} may not act as {authzid.decode('utf-8', 'replace')!r}")
    if policy.principals and principal not in policy.principals:
        _refuse(sock, f"principal {principal} is not allowed on this listener")
    send_message(sock, COMPLETE, b"")
    layer = chosen[0]
    return SaslSocket(
        sock, ctx, layer, principal, peer_max if layer != "auth" else 0, max_frame, _deadline(ctx)
    )


def _refuse(sock: socket.socket, why: str) -> Any:
    with contextlib.suppress(OSError):
        send_message(sock, ERROR, f"metaproxy: {why}".encode())
    raise SaslError(why)


def gss_reason(e: Exception) -> str:
    """A GSS-API error as one line (its routine and its mechanism's reason, never a token)."""
    gen = getattr(e, "gen_message", None)
    try:
        text = gen() if callable(gen) else str(e)
    except Exception:
        text = str(e)
    return " ".join(str(text).split())
