"""A simulated wide-area link: TCP relays that add latency and share a bandwidth limit.

This machine's kernel has no ``netem`` queueing discipline, so the link is made in user space:
each on-prem port (NameNode, DataNode, HMS, WebHDFS) gets a relay on another loopback address,
and everything the cloud side sends or receives through the relays is

* held for half the round-trip time in each direction, and
* paced so that all relays of one link together move at most ``rate`` bytes per second in
  each direction (one shared schedule per direction, like one physical link).

:func:`measure` checks a link before a benchmark trusts it: the round trip of small messages
and the throughput of a bulk transfer, through the relay, against an echo/sink server.

    python -m metaproxy.stack.wanlink --rtt-ms 30 --mbit 200   # a link to an echo server, measured
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

    def __post_init__(self) -> None:
        rate = self.mbit * 1e6 / 8
        self.up = Direction(self.rtt_s / 2, rate)
        self.down = Direction(self.rtt_s / 2, rate)


class Relay:
    """One listening port of the link, relaying to one on-prem ``target``."""

    def __init__(self, link: Link, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.link, self.listen, self.target = link, listen, target
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, *self.listen, reuse_address=True)
        self.listen = self.server.sockets[0].getsockname()[:2]

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(asyncio.CancelledError):  # cancelled: the link is closing
            await asyncio.gather(
                _pump(creader, swriter, self.link.up),
                _pump(sreader, cwriter, self.link.down),
                return_exceptions=True,
            )
        for w in (cwriter, swriter):
            w.close()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, d: Direction) -> None:
    """Carry one direction: each chunk is delivered when the link's schedule says it arrives."""
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
    followed by that many bytes, answered by ``OK`` once all have arrived."""

    def handle(c: socket.socket) -> None:
        with c, contextlib.suppress(ConnectionError, OSError):
            while True:
                kind = c.recv(1)
                if not kind:
                    return
                if kind == b"P":
                    c.sendall(b"P" + _recv_exact(c, 31))
                else:
                    left = int.from_bytes(_recv_exact(c, 8), "big")
                    while left:
                        left -= len(c.recv(min(CHUNK, left)))
                    c.sendall(b"OK")

    return serve_in_threads(handle)


def measure(host: str, port: int, pings: int = 10, bulk: int = 8 * 1024 * 1024) -> dict[str, float]:
    """Round trip (median of small echoes) and upload throughput through a relay to the
    echo/sink server."""
    rtts = []
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
        elapsed = time.perf_counter() - t0
    rtt = statistics.median(rtts)
    # the transfer's time less one round trip (the request's way there and the answer's back)
    return {"rtt_ms": rtt * 1000, "mbit": sent * 8 / max(elapsed - rtt, 1e-9) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtt-ms", type=float, default=30.0)
    ap.add_argument("--mbit", type=float, default=200.0)
    args = ap.parse_args()
    srv, port = _echo_sink_server()
    runner = LinkRunner(Link(args.rtt_ms / 1000, args.mbit))
    host, rport = runner.add(("127.0.0.1", 0), ("127.0.0.1", port))
    m = measure(host, rport)
    print(
        f"configured {args.rtt_ms:.0f} ms / {args.mbit:.0f} Mbit/s; measured {m['rtt_ms']:.1f} ms / {m['mbit']:.0f} Mbit/s"
    )
    runner.close()
    srv.close()


if __name__ == "__main__":
    main()
