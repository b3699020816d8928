"""The simulated WAN link: bytes cross intact both ways, relays share one schedule."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

import pytest

from metaproxy_devstack.wanlink import (
    Direction,
    Link,
    LinkRunner,
    _echo_sink_server,
    _recv_exact,
    serve_in_threads,
)

pytestmark = pytest.mark.unit


def test_schedule_adds_delay_and_serialisation_and_is_shared() -> None:
    d = Direction(delay_s=0.015, rate=1_000_000)  # 1 MB/s
    assert d.schedule(0.0, 1000) == pytest.approx(0.016)  # 15 ms + 1 ms on the wire
    # a second chunk that arrives at once waits for the first to be on the wire
    assert d.schedule(0.0, 1000) == pytest.approx(0.017)
    # one arriving long after is only delayed
    assert d.schedule(10.0, 500) == pytest.approx(10.0155)
    assert d.moved == 2500
    unlimited = Direction(delay_s=0.01, rate=0)
    assert unlimited.schedule(1.0, 10**9) == pytest.approx(1.01)
    link = Link(rtt_s=0.030, mbit=200)
    assert link.up.delay_s == link.down.delay_s == pytest.approx(0.015)
    assert link.up.rate == 25_000_000


def _upper_server() -> tuple[socket.socket, int]:
    """Answers each connection with the SHA-256 of everything it received, then its length."""

    def handle(c: socket.socket) -> None:
        with c:
            h = hashlib.sha256()
            n = 0
            while data := c.recv(65536):
                h.update(data)
                n += len(data)
            c.sendall(h.digest() + n.to_bytes(8, "big"))

    return serve_in_threads(handle)


def test_bytes_cross_intact_both_ways_on_many_connections() -> None:
    srv, port = _upper_server()
    runner = LinkRunner(Link(rtt_s=0.004, mbit=400))
    try:
        host, rport = runner.add(("127.0.0.1", 0), ("127.0.0.1", port))
        payloads = [os.urandom(n) for n in (0, 1, 70_000, 1_500_000)]
        results: dict[int, bytes] = {}

        def one(i: int) -> None:
            with socket.create_connection((host, rport), timeout=30) as s:
                s.sendall(payloads[i])
                s.shutdown(socket.SHUT_WR)  # a half-close crosses the link too
                results[i] = _recv_exact(s, 40)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(payloads))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for i, p in enumerate(payloads):
            assert results[i] == hashlib.sha256(p).digest() + len(p).to_bytes(8, "big")
        assert runner.link.up.moved == sum(len(p) for p in payloads)
        assert runner.link.down.moved == 40 * len(payloads)
    finally:
        runner.close()
        srv.close()


def test_a_closed_target_closes_the_client_side() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    runner = LinkRunner(Link(rtt_s=0.002, mbit=100))
    try:
        host, rport = runner.add(("127.0.0.1", 0), ("127.0.0.1", dead))
        with socket.create_connection((host, rport), timeout=10) as c:
            assert c.recv(10) == b""
        srv, port = _echo_sink_server()
        host2, rport2 = runner.add(("127.0.0.1", 0), ("127.0.0.1", port))
        with socket.create_connection((host2, rport2), timeout=10) as c:  # the link still serves
            c.sendall(b"P" * 32)
            assert _recv_exact(c, 32) == b"P" * 32
        srv.close()
    finally:
        runner.close()


def test_a_served_link_is_controlled_and_measured_through_its_echo_relay() -> None:
    """`python -m metaproxy_devstack.wanlink --relay …` relays, reports and takes new settings."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request

    from metaproxy_devstack.procs import free_port
    from metaproxy_devstack.wanlink import measure

    srv, target = _upper_server()
    control = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "metaproxy_devstack.wanlink",
            "--rtt-ms",
            "20",
            "--mbit",
            "100",
            "--relay",
            f"127.0.0.1:0=127.0.0.1:{target}",
            "--control",
            f"127.0.0.1:{control}",
        ]
    )
    url = f"http://127.0.0.1:{control}/link"
    try:
        for _ in range(100):
            try:
                state = json.load(urllib.request.urlopen(url, timeout=2))
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the link's control endpoint never answered")
        assert (state["rtt_ms"], state["mbit"]) == (20, 100)
        host, port = state["echo"].rsplit(":", 1)
        m = measure(host, int(port), pings=5, bulk=2 * 1024 * 1024)
        # the delay and the bandwidth cap are floors/ceilings a busy machine cannot break
        assert 19 < m["rtt_ms"] < 500
        assert 5 < m["mbit"] < 110
        req = urllib.request.Request(url, data=json.dumps({"rtt_ms": 2, "mbit": 0}).encode(), method="PUT")
        assert json.load(urllib.request.urlopen(req, timeout=5))["mbit"] == 0
        fast = measure(host, int(port), pings=5, bulk=2 * 1024 * 1024)
        assert fast["rtt_ms"] < 19 and fast["mbit"] > 110
        bad = urllib.request.Request(url, data=b'{"mbit": -5}', method="PUT")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        assert e.value.code == 400
        down = urllib.request.Request(url, data=b'{"down": true}', method="PUT")
        assert json.load(urllib.request.urlopen(down, timeout=5))["down"] is True
        up = urllib.request.Request(url, data=b'{"down": false}', method="PUT")
        assert json.load(urllib.request.urlopen(up, timeout=5))["down"] is False
        not_bool = urllib.request.Request(url, data=b'{"down": "yes"}', method="PUT")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(not_bool, timeout=5)
        assert e.value.code == 400
    finally:
        proc.terminate()
        proc.wait(10)
        srv.close()


def test_a_new_connection_pays_a_round_trip_for_its_handshake() -> None:
    """The first answer on a new connection comes after two round trips (the handshake's and
    the request's), later ones after one: an engine that connects per call pays the link twice."""
    import time

    srv, port = _echo_sink_server()
    rtt = 0.05
    runner = LinkRunner(Link(rtt_s=rtt, mbit=0))
    try:
        host, rport = runner.add(("127.0.0.1", 0), ("127.0.0.1", port))
        t0 = time.perf_counter()
        with socket.create_connection((host, rport), timeout=10) as c:
            c.sendall(b"P" * 32)  # a ping: "P" and 31 bytes, echoed
            assert _recv_exact(c, 32) == b"P" * 32
            first = time.perf_counter() - t0
            t1 = time.perf_counter()
            c.sendall(b"P" + b"Q" * 31)
            assert _recv_exact(c, 32) == b"P" + b"Q" * 31
            second = time.perf_counter() - t1
        # floors only: a busy machine can add time, never take it away
        assert first >= 2 * rtt and second >= rtt
        assert runner.link.handshakes == 1
    finally:
        runner.close()
        srv.close()


def test_a_link_taken_down_carries_nothing_until_it_is_up_again() -> None:
    """Down, the link keeps its connections and holds every byte (silence, not an error); up
    again, what waited arrives intact."""
    srv, port = _echo_sink_server()
    runner = LinkRunner(Link(rtt_s=0.002, mbit=0))
    try:
        host, rport = runner.add(("127.0.0.1", 0), ("127.0.0.1", port))
        with socket.create_connection((host, rport), timeout=10) as c:
            c.sendall(b"P" * 32)
            assert _recv_exact(c, 32) == b"P" * 32
            runner.loop.call_soon_threadsafe(runner.link.set_down, True)
            c.sendall(b"P" + b"x" * 31)
            c.settimeout(0.5)
            with pytest.raises(socket.timeout):
                c.recv(32)
            assert runner.link.is_down
            runner.loop.call_soon_threadsafe(runner.link.set_down, False)
            c.settimeout(10)
            assert _recv_exact(c, 32) == b"P" + b"x" * 31
    finally:
        runner.close()
        srv.close()
