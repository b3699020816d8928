"""Cache gateway throughput, each side beside its baseline in one run.

* warm: 8 concurrent readers of 8 MiB ranged GETs over a 64 MiB object, from the gateway
  (blocks in memory) and from nginx serving the same bytes from local disk with sendfile —
  the practical limit of this machine;
* cold: the same object read in sequential 8 MiB ranges through a gateway whose cache is
  emptied (``/cache/free``) before each round, and straight from WebHDFS (NameNode, then the
  DataNode it names).

Rounds alternate between the two sides and the medians count (5 warm, 15 cold: on a 2-core
machine single rounds vary by ±25 %); the spread of the per-round ratios is printed too.

The gateway runs as its own process (``metaproxy gateway``) on the local stack's HDFS; nginx
comes from Debian (``apt-get install nginx-light``; the bench installs it when it can). One
client for all sides: raw HTTP over sockets, reading into a preallocated buffer, so the client
is not what is measured.

    .venv/bin/python bench/bench_gateway.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from metaproxy.ufs.webhdfs import WebHdfs
from metaproxy_devstack.launcher import Stack
from metaproxy_devstack.procs import free_port

OUT = Path(__file__).resolve().parent / "out"
MiB = 1024 * 1024
KEY, SECRET = "bench", "bench-secret"


def webhdfs_get(host: str, port: int, path: str, offset: int, length: int, buf: bytearray) -> int:
    """A ranged WebHDFS read with the same raw client: ask the NameNode, follow it to a DataNode."""
    location = http_get(
        host,
        port,
        f"/webhdfs/v1{quote(path)}?op=OPEN&user.name=hdfs&offset={offset}&length={length}",
        {},
        buf,
    )
    assert isinstance(location, str)
    dn = urlsplit(location)
    n = http_get(dn.hostname or host, dn.port or 80, f"{dn.path}?{dn.query}", {}, buf)
    assert isinstance(n, int)
    return n


def http_get(host: str, port: int, path: str, headers: dict[str, str], buf: bytearray) -> int | str:
    """One GET over a fresh connection; the body is read into ``buf``; returns its length
    (or, for a redirect, where it points)."""
    with socket.create_connection((host, port), timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed before the headers")
            head += chunk
        header, _, body = head.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        if status == 307:
            return next(
                line.split(b":", 1)[1].strip().decode()
                for line in header.split(b"\r\n")
                if line.lower().startswith(b"location")
            )
        if status not in (200, 206):
            raise OSError(f"HTTP {status}: {header[:200]!r} {body[:300]!r}")
        length = next(
            int(line.split(b":", 1)[1])
            for line in header.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        view = memoryview(buf)
        got = len(body)
        view[:got] = body
        while got < length:
            n = s.recv_into(view[got:length])
            if n == 0:
                raise OSError("short body")
            got += n
        return got


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signed_headers(endpoint: str, path: str, rng: str) -> dict[str, str]:
    req = AWSRequest(method="GET", url=endpoint + path, headers={"Range": rng})
    req.context["payload_signing_enabled"] = False
    S3SigV4Auth(Credentials(KEY, SECRET), "s3", "us-east-1").add_auth(req)
    return {k: v for k, v in req.headers.items() if k.lower() != "host"}


def run_readers(
    host: str, port: int, path: str, size: int, readers: int, per_reader: int, rng_size: int, sign: str | None
) -> float:
    """Aggregate MB/s of ``readers`` threads each doing ``per_reader`` random ranged GETs."""
    errors: list[BaseException] = []
    total = [0]
    lock = threading.Lock()

    def reader(seed: int) -> None:
        buf = bytearray(rng_size)
        r = random.Random(seed)
        try:
            for _ in range(per_reader):
                start = r.randrange(0, size - rng_size + 1, 4096)
                rng = f"bytes={start}-{start + rng_size - 1}"
                headers = signed_headers(sign, path, rng) if sign else {"Range": rng}
                n = http_get(host, port, path, headers, buf)
                assert isinstance(n, int)
                with lock:
                    total[0] += n
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return total[0] / elapsed / 1e6


def ensure_nginx() -> str:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if exe:
        return exe
    if os.geteuid() == 0:
        print("  installing nginx-light from Debian ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light"], check=True, capture_output=True)
        return "/usr/sbin/nginx"
    raise SystemExit("nginx is needed as the baseline: apt-get install nginx-light")


def start_nginx(root: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""worker_processes 2;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""
    )
    proc = subprocess.Popen([ensure_nginx(), "-c", str(conf), "-p", str(workdir)])
    wait_port(port)
    return proc, port


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def start_gateway(
    stack: dict[str, Any], workdir: Path, hdfs_root: str, tag: str
) -> tuple[subprocess.Popen[bytes], int, int]:
    port, admin = free_port(), free_port()
    conf = workdir / f"gateway-{tag}.toml"
    conf.write_text(
        f"""[state]
path = "{workdir}/state-{tag}.db"
[gateway]
port = {port}
admin_port = {admin}
bucket = "metaproxy"
access_key = "{KEY}"
secret_key = "{SECRET}"
block_size = "4MiB"
[gateway.memory]
capacity = "512MiB"
[gateway.disk]
path = "{workdir}/cache-{tag}"
capacity = "1GiB"
[hdfs]
webhdfs = "{stack["webhdfs"]}"
[[mount]]
path = "/bench"
ufs = "{stack["hdfs"]}{hdfs_root}"
"""
    )
    log = open(workdir / f"gateway-{tag}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaproxy", "--config", str(conf), "gateway"], stdout=log, stderr=log
    )
    wait_port(port)
    wait_port(admin)
    return proc, port, admin


class Setup:
    """The object on local disk (for nginx) and on HDFS (for the gateways and WebHDFS)."""

    size = 64 * MiB
    rng_size = 8 * MiB
    readers = 8

    def __init__(self, stack: dict[str, Any]) -> None:
        self.stack = stack
        self.data = os.urandom(self.size)
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-gw-"))
        www = self.workdir / "www"
        www.mkdir()
        (www / "object.bin").write_bytes(self.data)
        # nginx's workers drop to an unprivileged user when started as root: let them read the file
        self.workdir.chmod(0o755)
        www.chmod(0o755)
        (www / "object.bin").chmod(0o644)
        self.fs = WebHdfs(stack["webhdfs"])
        self.hdfs_root = "/bench-gateway"
        self.fs.write(f"{self.hdfs_root}/object.bin", self.data)
        self.path = "/metaproxy/" + quote("bench/object.bin")
        self.procs: list[subprocess.Popen[bytes]] = []

    def close(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(10)
        self.fs.delete(self.hdfs_root, recursive=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


def measure_warm(st: Setup, rounds: int, per_reader: int, results: dict[str, Any]) -> None:
    """Warm: nginx beside the gateway's memory tier, rounds alternating; then by readers."""
    nginx, nport = start_nginx(st.workdir / "www", st.workdir)
    st.procs.append(nginx)
    gw, gport, _ = start_gateway(st.stack, st.workdir, st.hdfs_root, "warm")
    st.procs.append(gw)
    endpoint = f"http://127.0.0.1:{gport}"
    size, rng = st.size, st.rng_size
    # fill the cache, then measure both sides alternately
    run_readers("127.0.0.1", gport, st.path, size, 1, size // rng, rng, endpoint)
    warm: dict[str, list[float]] = {"nginx": [], "gateway": []}
    for _ in range(rounds):
        warm["nginx"].append(
            run_readers("127.0.0.1", nport, "/object.bin", size, st.readers, per_reader, rng, None)
        )
        warm["gateway"].append(
            run_readers("127.0.0.1", gport, st.path, size, st.readers, per_reader, rng, endpoint)
        )
    results["warm_rounds_mb_s"] = warm
    results["warm_mb_s"] = {k: statistics.median(v) for k, v in warm.items()}
    results["warm_ratio"] = results["warm_mb_s"]["gateway"] / results["warm_mb_s"]["nginx"]
    # growth: warm throughput as readers are added (both sides, same ranges)
    results["warm_by_readers"] = {
        n: {
            "nginx": run_readers("127.0.0.1", nport, "/object.bin", size, n, 4, rng, None),
            "gateway": run_readers("127.0.0.1", gport, st.path, size, n, 4, rng, endpoint),
        }
        for n in (1, 2, 4, 8, 16)
    }


def measure_cold(st: Setup, rounds: int, results: dict[str, Any]) -> None:
    """Cold: a gateway whose cache is emptied before each of its rounds beside WebHDFS, the same
    sequential ranges with the same client; rounds alternate, the median counts."""
    cold_gw, cport, cadmin = start_gateway(st.stack, st.workdir, st.hdfs_root, "cold")
    st.procs.append(cold_gw)
    cendpoint = f"http://127.0.0.1:{cport}"
    buf = bytearray(st.rng_size)
    wh = urlsplit(st.stack["webhdfs"])
    starts = range(0, st.size, st.rng_size)

    def webhdfs_round() -> None:
        for start in starts:
            got = webhdfs_get(
                wh.hostname or "127.0.0.1",
                wh.port or 80,
                f"{st.hdfs_root}/object.bin",
                start,
                st.rng_size,
                buf,
            )
            assert got == st.rng_size

    def free() -> None:
        requests.post(
            f"http://127.0.0.1:{cadmin}/cache/free", json={"path": "/bench"}, timeout=60
        ).raise_for_status()

    def gateway_round() -> None:
        for start in starts:
            rng = f"bytes={start}-{start + st.rng_size - 1}"
            http_get("127.0.0.1", cport, st.path, signed_headers(cendpoint, st.path, rng), buf)

    # warm-up, not measured: a DataNode just started serves its first reads at half speed
    # (JIT), which would flatter whichever side comes second
    for _ in range(3):
        webhdfs_round()
        free()
        gateway_round()
    cold: dict[str, list[float]] = {"webhdfs": [], "gateway": []}
    cpu_s = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        webhdfs_round()
        cold["webhdfs"].append(st.size / (time.perf_counter() - t0) / 1e6)
        free()
        c0 = cpu_seconds(cold_gw.pid)
        t0 = time.perf_counter()
        gateway_round()
        cold["gateway"].append(st.size / (time.perf_counter() - t0) / 1e6)
        cpu_s += cpu_seconds(cold_gw.pid) - c0
    results["cold_rounds_mb_s"] = cold
    results["cold_mb_s"] = {k: statistics.median(v) for k, v in cold.items()}
    results["cold_ratio"] = results["cold_mb_s"]["gateway"] / results["cold_mb_s"]["webhdfs"]
    per_round = sorted(g / w for g, w in zip(cold["gateway"], cold["webhdfs"], strict=True))
    results["cold_round_ratio_quartiles"] = statistics.quantiles(per_round, n=4)
    results["cold_gateway_cpu_s_per_gb"] = cpu_s / (len(cold["gateway"]) * st.size / 1e9)
    results["webhdfs"] = f"{wh.hostname}:{wh.port}"


def report(results: dict[str, Any]) -> None:
    w, c = results["warm_mb_s"], results["cold_mb_s"]
    wr = len(results["warm_rounds_mb_s"]["gateway"])
    print(
        f"\nwarm, {results['readers']} readers x {results['range_mib']} MiB ranges over {results['object_mib']} MiB"
        f" (median of {wr} rounds):"
    )
    print(f"  nginx (sendfile, local disk) {w['nginx']:8.0f} MB/s")
    print(
        f"  gateway (memory tier)        {w['gateway']:8.0f} MB/s   ratio {results['warm_ratio']:.2f}  (goal >= 0.8)"
    )
    print("warm throughput by concurrent readers (MB/s): readers, nginx, gateway, ratio")
    for n, row in results["warm_by_readers"].items():
        print(f"  {n:3d} {row['nginx']:8.0f} {row['gateway']:8.0f} {row['gateway'] / row['nginx']:6.2f}")
    rounds = len(results["cold_rounds_mb_s"]["gateway"])
    print(f"cold, one reader, sequential {results['range_mib']} MiB ranges (median of {rounds} rounds):")
    print(f"  WebHDFS direct               {c['webhdfs']:8.0f} MB/s")
    print(
        f"  gateway (empty cache)        {c['gateway']:8.0f} MB/s   ratio {results['cold_ratio']:.2f}  (goal >= 0.9)"
    )
    q = results["cold_round_ratio_quartiles"]
    print(f"  per-round ratios: quartiles {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}")
    print(f"  gateway CPU per GB served cold: {results['cold_gateway_cpu_s_per_gb']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=15, help="cold rounds per side")
    ap.add_argument("--warm-rounds", type=int, default=5, help="warm rounds per side")
    args = ap.parse_args()
    st = Setup(Stack().up())
    results: dict[str, Any] = {
        "object_mib": st.size // MiB,
        "range_mib": st.rng_size // MiB,
        "readers": st.readers,
    }
    try:
        measure_warm(st, 2 if args.quick else args.warm_rounds, 4 if args.quick else 12, results)
        measure_cold(st, 5 if args.quick else args.rounds, results)
    finally:
        st.close()
    OUT.mkdir(exist_ok=True)
    (OUT / "gateway.json").write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
