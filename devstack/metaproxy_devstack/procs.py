"""Processes and ports of the local stack: free ports below the ephemeral range, pid checks,
starting and stopping a component's process group, JDK discovery and log tails.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

from metaproxy.jvm import HADOOP_JAVA17_OPENS
from metaproxy_devstack.common import HOST, StackError

JAVA17_OPENS = list(HADOOP_JAVA17_OPENS)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a component's log, indented, for an error that must explain itself."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    | {line}" for line in tail)


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    Ports are chosen when the stack starts but bound up to a minute later; a port from the
    ephemeral range could meanwhile become the local end of some process's outgoing
    connection (Trino and the DataNode open many), and the late listener would fail to bind.
    """
    lo, _ = _ephemeral_range()
    first = 20000 if lo > 21000 else 1024
    rng = random.SystemRandom()
    for _ in range(500):
        port = rng.randrange(first, lo) if lo - first > 100 else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        if not port_open(port, timeout=0.2):
            _handed_out.add(port)
            return port
    raise StackError(f"no free port on {HOST} below {lo}")


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _raise_open_files_limit() -> None:
    """In the child before exec: as many open files as allowed, up to 65536."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))


def spawn(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> int:
    """Start ``argv`` in a session of its own, output appended to ``log``; returns its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            cwd=str(cwd),
            start_new_session=True,
            preexec_fn=_raise_open_files_limit,
        )
    return proc.pid


def stop_group(pid: int, grace_s: float = 20.0) -> bool:
    """Stop the process group led by ``pid``: SIGTERM, then SIGKILL after ``grace_s``.

    Returns False when the process was not running.
    """
    if not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    return True


def java_home(min_version: int, max_version: int = 99) -> str:
    """A JDK home whose feature version is in ``[min_version, max_version]``.

    ``$JAVA_HOME`` is tried first, then /usr/lib/jvm. Hadoop and Hive need 17–21 (they call
    ``Subject.getSubject``, which Java 24 removed); Trino 476 needs 24 or newer.
    """
    candidates = []
    for env in ("METAPROXY_TRINO_JAVA_HOME" if min_version >= 24 else "METAPROXY_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(env):
            candidates.append(Path(os.environ[env]))
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates.extend(sorted(jvm.iterdir(), reverse=True))
    for home in candidates:
        release = home / "release"
        if not (home / "bin" / "java").exists() or not release.exists():
            continue
        for line in release.read_text().splitlines():
            if line.startswith("JAVA_VERSION="):
                feature = line.split("=", 1)[1].strip('"').split(".")[0]
                if feature.isdigit() and min_version <= int(feature) <= max_version:
                    return str(home)
    raise StackError(f"no JDK {min_version}-{max_version} found (set JAVA_HOME or METAPROXY_TRINO_JAVA_HOME)")
