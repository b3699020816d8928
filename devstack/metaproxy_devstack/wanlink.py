"""A simulated wide-area link: TCP relays that add latency and share a bandwidth limit.

This machine's kernel has no ``netem`` queueing discipline, so the link is made in user space:
each on-prem port (NameNode, DataNode, HMS, WebHDFS) gets a relay on another loopback address,
and everything the cloud side sends or receives through the relays is

* held for half the round-trip time in each direction,
* paced so that all relays of one link together move at most ``rate`` bytes per second in
  each direction (one shared schedule per direction, like one physical link), and
* on a new connection, held for one more round trip before its first byte moves: what a TCP
  handshake (SYN, SYN-ACK) costs before a client can send — so an engine that opens a new
  metastore connection per call pays for it, as it would across a real link.

A link can also be taken down (``PUT /link {"down": true}``): nothing moves either way until it
is up again — connections stay open and bytes wait, as across a link that silently drops
everything (the hardest outage for a client: no error, only silence).

:func:`measure` checks a link before a benchmark trusts it: the round trip of small messages
and the throughput of a bulk transfer, through the relay, against an echo/sink server.

    python -m metaproxy_devstack.wanlink --rtt-ms 30 --mbit 200   # a link to an echo server, measured
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class Direction:
    """One direction of the link: a delay and a transmission schedule shared by every relay."""

    delay_s: float
    rate: float  # bytes per second; 0: unlimited
    next_free: float = 0.0
    moved: int = 0

    def schedule(self, arrived: float, n: int) -> float:
        """When ``n`` bytes that arrived at ``arrived`` leave the far end of the link."""
        start = max(arrived + self.delay_s, self.next_free)
        done = start + (n / self.rate if self.rate else 0.0)
        if self.rate:
            self.next_free = done
        self.moved += n
        return done


@dataclass
class Link:
    """A WAN link between the cloud side (clients) and the on-prem side (servers)."""

    rtt_s: float = 0.030
    mbit: float = 200.0
    up: Direction = field(init=False)  # cloud → on-prem
    down: Direction = field(init=False)  # on-prem → cloud
    #: new connections made through the link (each charged a round trip for its handshake)
    handshakes: int = 0
    #: set while the link carries bytes; cleared while it is down
    carrying: asyncio.Event = field(init=False)

    def __post_init__(self) -> None:
        rate = self.mbit * 1e6 / 8
        self.up = Direction(self.rtt_s / 2, rate)
        self.down = Direction(self.rtt_s / 2, rate)
        self.carrying = asyncio.Event()
        self.carrying.set()

    @property
    def is_down(self) -> bool:
        return not self.carrying.is_set()

    def set_down(self, down: bool) -> None:
        """Take the link down or bring it back (call on the link's event-loop thread)."""
        if down:
            self.carrying.clear()
        else:
            self.carrying.set()

    def set(self, rtt_s: float, mbit: float) -> None:
        """New settings for both directions (call on the link's event-loop thread)."""
        self.rtt_s, self.mbit = rtt_s, mbit
        for d in (self.up, self.down):
            d.delay_s, d.rate, d.next_free = rtt_s / 2, mbit * 1e6 / 8, 0.0


class Relay:
    """One listening port of the link, relaying to one on-prem ``target``."""

    def __init__(self, link: Link, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.link, self.listen, self.target = link, listen, target
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, *self.listen, reuse_address=True)
        self.listen = self.server.sockets[0].getsockname()[:2]

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        # the event loop holds tasks weakly: once a client has half-closed, nothing else may
        # hold this one, and a collected task drops the connection without a word
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(creader, cwriter)
        finally:
            self._tasks.discard(task)

    async def _relay(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # the handshake's round trip: nothing the client sends moves before it is over (what it
        # sent meanwhile waits in the socket, as data waits for an established connection)
        self.link.handshakes += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(self.link.rtt_s)
        with contextlib.suppress(asyncio.CancelledError):  # cancelled: the link is closing
            await asyncio.gather(
                _pump(creader, swriter, self.link.up, self.link.carrying),
                _pump(sreader, cwriter, self.link.down, self.link.carrying),
                return_exceptions=True,
            )
        for w in (cwriter, swriter):
            w.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, d: Direction, carrying: asyncio.Event
) -> None:
    """Carry one direction: each chunk is delivered when the link's schedule says it arrives,
    and not while the link is down."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            at, data = await queue.get()
            if not data:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await carrying.wait()
            writer.write(data)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            data = await reader.read(CHUNK)
            now = loop.time()
            if not data:
                await queue.put((now + d.delay_s, b""))
                break
            await queue.put((d.schedule(now, len(data)), data))
            # back-pressure: do not read far ahead of what the link can carry
            ahead = d.next_free - now
            if ahead > 0.25:
                await asyncio.sleep(ahead - 0.25)
        await sender  # a half-close is passed on; the relay closes both sides at the end
    except (ConnectionError, OSError):
        sender.cancel()
        with contextlib.suppress(Exception):
            writer.close()


class LinkRunner:
    """Relays of one link on an event-loop thread of their own."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.loop = asyncio.new_event_loop()
        self.relays: list[Relay] = []
        self._thread = threading.Thread(target=self.loop.run_forever, name="wanlink", daemon=True)
        self._thread.start()

    def add(self, listen: tuple[str, int], target: tuple[str, int]) -> tuple[str, int]:
        """Relay ``listen`` → ``target`` across the link; returns the address listened on."""
        relay = Relay(self.link, listen, target)
        asyncio.run_coroutine_threadsafe(relay.start(), self.loop).result(10)
        self.relays.append(relay)
        return relay.listen

    def close(self) -> None:
        async def stop() -> None:
            for r in self.relays:
                if r.server is not None:
                    r.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# --------------------------------------------------------------------------------------------
# checking a link


def _recv_exact(c: socket.socket, n: int) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = c.recv(min(CHUNK, n - len(got)))
        if not data:
            raise ConnectionError("closed early")
        got += data
    return bytes(got)


def serve_in_threads(handle: Callable[[socket.socket], None]) -> tuple[socket.socket, int]:
    """A loopback server calling ``handle(conn)`` on a thread per connection; close the
    returned socket to stop it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def accept() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv, srv.getsockname()[1]


def _echo_sink_server() -> tuple[socket.socket, int]:
    """A server for :func:`measure`: ``P`` + 31 bytes is echoed; ``B`` + an 8-byte length is
    followed by that many bytes, answered by ``OK`` once all have arrived; ``D`` + an 8-byte
    length is answered by that many bytes."""

    def handle(c: socket.socket) -> None:
        with c, contextlib.suppress(ConnectionError, OSError):
            while True:
                kind = c.recv(1)
                if not kind:
                    return
                if kind == b"P":
                    c.sendall(b"P" + _recv_exact(c, 31))
                elif kind == b"D":
                    left = int.from_bytes(_recv_exact(c, 8), "big")
                    block = b"y" * CHUNK
                    while left:
                        c.sendall(block[:left])
                        left -= min(CHUNK, left)
                else:
                    left = int.from_bytes(_recv_exact(c, 8), "big")
                    while left:
                        left -= len(c.recv(min(CHUNK, left)))
                    c.sendall(b"OK")

    return serve_in_threads(handle)


def measure(host: str, port: int, pings: int = 10, bulk: int = 8 * 1024 * 1024) -> dict[str, float]:
    """Round trip (median of small echoes), what a new connection adds before its first answer
    (``handshake_ms``, median; about one round trip), and throughput each way (``mbit`` is the
    lower) through a relay to the echo/sink server."""
    rtts, firsts = [], []
    for _ in range(max(3, pings // 4)):
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"P" * 32)
            _recv_exact(s, 32)
        firsts.append(time.perf_counter() - t0)
    with socket.create_connection((host, port), timeout=30) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(pings):
            t0 = time.perf_counter()
            s.sendall(b"P" * 32)
            _recv_exact(s, 32)
            rtts.append(time.perf_counter() - t0)
    with socket.create_connection((host, port), timeout=60) as s:
        block = b"x" * CHUNK
        t0 = time.perf_counter()
        s.sendall(b"B" + bulk.to_bytes(8, "big"))
        sent = 0
        while sent < bulk:
            s.sendall(block[: bulk - sent])
            sent += min(len(block), bulk - sent)
        _recv_exact(s, 2)
        up_s = time.perf_counter() - t0
    with socket.create_connection((host, port), timeout=60) as s:
        t0 = time.perf_counter()
        s.sendall(b"D" + bulk.to_bytes(8, "big"))
        _recv_exact(s, bulk)
        down_s = time.perf_counter() - t0
    rtt = statistics.median(rtts)
    # a transfer's time less one round trip (the request's way there and the answer's back)
    up = sent * 8 / max(up_s - rtt, 1e-9) / 1e6
    down = bulk * 8 / max(down_s - rtt, 1e-9) / 1e6
    return {
        "rtt_ms": rtt * 1000,
        "handshake_ms": (statistics.median(firsts) - rtt) * 1000,
        "mbit": min(up, down),
        "mbit_up": up,
        "mbit_down": down,
    }


def serve(
    link: Link, relays: list[tuple[tuple[str, int], tuple[str, int]]], control: tuple[str, int]
) -> None:
    """Run a link until SIGTERM: the relays, an echo/sink server behind the link (relayed on
    the first relay's listen host, for :func:`measure`), and an HTTP control port.

    ``GET /link`` tells the settings, the relays and the bytes moved each way; ``PUT /link``
    with ``{"rtt_ms": .., "mbit": .., "down": ..}`` changes the settings (``mbit`` 0: no
    bandwidth limit; ``down`` true: nothing moves until it is false again).
    """
    import json
    import signal
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    runner = LinkRunner(link)
    listened = [runner.add(listen, target) for listen, target in relays]
    srv, echo_port = _echo_sink_server()
    echo = runner.add((relays[0][0][0] if relays else "127.0.0.1", 0), ("127.0.0.1", echo_port))

    def state() -> dict[str, object]:
        return {
            "rtt_ms": link.rtt_s * 1000,
            "mbit": link.mbit,
            "up_bytes": link.up.moved,
            "down_bytes": link.down.moved,
            "handshakes": link.handshakes,
            "down": link.is_down,
            "relays": [f"{h}:{p}" for h, p in listened],
            "echo": f"{echo[0]}:{echo[1]}",
        }

    class Control(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._answer(200, state()) if self.path == "/link" else self._answer(
                404, {"error": "no such path"}
            )

        def do_PUT(self) -> None:  # noqa: N802
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                rtt_ms, mbit = (
                    float(body.get("rtt_ms", link.rtt_s * 1000)),
                    float(body.get("mbit", link.mbit)),
                )
                if rtt_ms < 0 or mbit < 0:
                    raise ValueError("rtt_ms and mbit must not be negative")
                down = body.get("down", link.is_down)
                if not isinstance(down, bool):
                    raise ValueError("down must be true or false")
            except (ValueError, TypeError, AttributeError) as e:
                self._answer(400, {"error": f"bad link settings: {e}"})
                return
            runner.loop.call_soon_threadsafe(link.set, rtt_ms / 1000, mbit)
            runner.loop.call_soon_threadsafe(link.set_down, down)
            time.sleep(0.05)
            self._answer(200, state())

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    httpd = ThreadingHTTPServer(control, Control)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, name="wanlink-control", daemon=True).start()
    print(f"wanlink: {json.dumps(state())}", flush=True)
    stop.wait()
    httpd.shutdown()
    runner.close()
    srv.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--mbit", type=float, default=200.0)
    ap.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="LISTEN=TARGET",
        help="serve the link: relay host:port to host:port (repeatable); without it, check a link",
    )
    ap.add_argument("--control", default="127.0.0.1:0", help="host:port of the control endpoint")
    args = ap.parse_args()
    link = Link(args.rtt_ms / 1000, args.mbit)
    if args.relay:
        pairs = []
        for r in args.relay:
            listen, _, target = r.partition("=")
            pairs.append((_address(listen), _address(target)))
        serve(link, pairs, _address(args.control))
        return
    srv, port = _echo_sink_server()
    runner = LinkRunner(link)
    host, rport = runner.add(("127.0.0.1", 0), ("127.0.0.1", port))
    m = measure(host, rport)
    print(
        f"configured {args.rtt_ms:.0f} ms / {args.mbit:.0f} Mbit/s; measured {m['rtt_ms']:.1f} ms / {m['mbit']:.0f} Mbit/s"
    )
    runner.close()
    srv.close()


if __name__ == "__main__":
    main()
