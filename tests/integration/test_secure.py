"""The secure stack (``metaproxy stack up --secure``): Kerberos between metaproxy, the HMS,
HDFS and Trino, TLS on the proxy's listeners. Run with ``METAPROXY_SECURE=1 pytest -m secure``.

Each fault of a Kerberized deployment gets a clear answer: a client without a ticket, with a
principal the listener does not serve, with a ticket that ended, or speaking plain Thrift; a
keytab that cannot be used stops start-up naming the file; a KDC that stops after start-up does
not fail calls while tickets last, and shows in ``/health`` and the metrics; a ticket that lapses
under a pooled upstream connection costs the client nothing. No secret or ticket reaches a log.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from thrift.transport import TTransport

from metaproxy.config import parse_config
from metaproxy.hms import connect
from metaproxy.security import KerberosLogin, SaslError, Security
from metaproxy.security.sasl import client_handshake
from metaproxy.thrift_server import MetastoreProxy

pytestmark = [pytest.mark.integration, pytest.mark.secure, pytest.mark.secure_only]


def _sec(stack: dict[str, Any]) -> dict[str, Any]:
    return dict(stack["secure"])


def client(
    stack: dict[str, Any], role: str = "user", service: str = "metaproxy", tls: bool = False
) -> Security:
    """How a test client authenticates: as ``role``'s principal, to ``service``'s."""
    s = _sec(stack)
    return Security(
        login=KerberosLogin(s["principals"][role], s["keytabs"][role]),
        service_principal=s["principals"][service],
        hms_tls=tls,
        ca_file=s["ca_file"],
    )


def proxy_config(stack: dict[str, Any], tmp: Path, role: str = "metaproxy", **listener: Any) -> Any:
    """An in-process proxy on the secure HMS: one kerberos listener (no TLS unless asked)."""
    s = _sec(stack)
    return parse_config(
        {
            "metastore": {
                "uris": [stack["hms"]],
                "kerberos_principal": s["principals"][role],
                "keytab": s["keytabs"][role],
                "service_principal": s["principals"]["hive"],
            },
            "kerberos": {"check_interval": "1h"},
            "tls": {"cert_file": s["cert_file"], "key_file": s["key_file"], "ca_file": s["ca_file"]},
            "state": {"path": f"{tmp}/state.db"},
            "proxy": {
                # every call goes upstream (the lapse test needs its pooled connection used)
                "metadata_cache_size": 0,
                "listener": [
                    {
                        "port": 0,
                        "profile": "passthrough",
                        "auth": "kerberos",
                        "principals": [s["principals"]["user"], s["principals"]["short"]],
                        **listener,
                    }
                ],
            },
        },
        "test.toml",
    )


@pytest.fixture
def kproxy(stack: dict[str, Any], tmp_path: Path) -> Any:
    p = MetastoreProxy(proxy_config(stack, tmp_path))
    p.start()
    yield p
    p.stop()


def _uri(p: MetastoreProxy) -> str:
    return f"thrift://localhost:{p.addresses[0][1]}"


def test_stack_is_kerberized(stack: dict[str, Any]) -> None:
    assert stack["webhdfs"].startswith("https://")
    assert Path(_sec(stack)["krb5_conf"]).exists()


def test_plain_client_is_refused_by_the_secure_hms(stack: dict[str, Any]) -> None:
    with pytest.raises(TTransport.TTransportException), connect(stack["hms"], 10, Security()) as c:
        c.get_all_databases()


def test_plain_client_is_refused_by_a_kerberos_listener_with_the_reason(kproxy: Any) -> None:
    from thrift.Thrift import TApplicationException

    with (
        pytest.raises(TApplicationException, match="requires Kerberos"),
        connect(_uri(kproxy), 10, Security()) as c,
    ):
        c.get_all_databases()


@pytest.fixture
def audit() -> Any:
    """The audit lines logged while the test runs."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("metaproxy.audit")
    handler, level, disabled = Keep(), logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False  # a logging set-up of an earlier test may have turned it off
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)
    logger.disabled = disabled


def test_kerberos_client_through_the_proxy_and_audit_names_it(
    kproxy: Any, stack: dict[str, Any], audit: list[str]
) -> None:
    with connect(_uri(kproxy), 30, client(stack)) as c:
        assert "default" in c.get_all_databases()
    principal = _sec(stack)["principals"]["user"]
    # the audit line is written once the reply has gone out
    deadline = time.monotonic() + 5
    while not any(f"principal={principal} method=get_all_databases" in line for line in audit):
        assert time.monotonic() < deadline, audit
        time.sleep(0.05)


def test_wrong_principal_is_refused(kproxy: Any, stack: dict[str, Any], audit: list[str]) -> None:
    with (
        pytest.raises(SaslError, match="not allowed on this listener"),
        connect(_uri(kproxy), 30, client(stack, "intruder")) as c,
    ):
        c.get_all_databases()
    deadline = time.monotonic() + 5  # the listener's audit line follows its refusal
    while not any("outcome=unauthenticated" in line for line in audit):
        assert time.monotonic() < deadline, audit
        time.sleep(0.05)


def test_client_without_ticket_gets_an_authentication_error(
    kproxy: Any, stack: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    # no keytab and an empty credential cache: nothing to authenticate with
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path}/empty-ccache")
    sock = socket.create_connection(("localhost", kproxy.addresses[0][1]), timeout=10)
    try:
        with pytest.raises(SaslError, match="cannot authenticate .*credentials"):
            client_handshake(sock, _sec(stack)["principals"]["metaproxy"], None)
    finally:
        sock.close()


def test_kerberos_and_tls_listener_of_the_stack(stack: dict[str, Any]) -> None:
    with connect(stack["proxy_passthrough"], 30, client(stack, tls=True)) as c:
        assert "default" in c.get_all_databases()
    # without TLS the listener does not even answer Thrift
    with (
        pytest.raises(TTransport.TTransportException),
        connect(stack["proxy_passthrough"], 10, client(stack)) as c,
    ):
        c.get_all_databases()


def test_delegation_token_calls_pass_through(kproxy: Any, stack: dict[str, Any]) -> None:
    with connect(_uri(kproxy), 30, client(stack)) as c:
        token = c.get_delegation_token("alice", "metaproxy")
        assert token
        assert c.renew_delegation_token(token) > time.time() * 1000
        c.cancel_delegation_token(token)


@pytest.mark.parametrize("kind", ["missing", "not a keytab"])
def test_unusable_keytab_stops_start_up_naming_the_file(
    stack: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    keytab = tmp_path / "proxy.keytab"
    if kind == "not a keytab":
        keytab.write_text("secret")
    cfg = tmp_path / "metaproxy.toml"
    cfg.write_text(
        f"""
[metastore]
uris = ["{stack["hms"]}"]
kerberos_principal = "{_sec(stack)["principals"]["metaproxy"]}"
keytab = "{keytab}"
[state]
path = "{tmp_path}/state.db"
[proxy]
admin_port = 0
[[proxy.listener]]
port = 0
"""
    )
    proc = subprocess.run(
        [sys.executable, "-m", "metaproxy", "--config", str(cfg), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert str(keytab) in proc.stderr


def test_ticket_lapse_and_expired_ticket(stack: dict[str, Any], tmp_path: Path) -> None:
    """The proxy as a principal whose tickets live 15 s, no renewal thread: after the ticket
    ends, its pooled connection is replaced and the client's call succeeds; a client holding
    an ended ticket gets a clear error."""
    from metaproxy.proxy.metrics import POOL_EVENTS

    p = MetastoreProxy(proxy_config(stack, tmp_path, role="short"))
    p.start()
    try:
        me = client(stack, "short")
        creds = me.login.initiator() if me.login else None
        # the listener accepts as the short-lived principal too
        with connect(_uri(p), 30, client(stack, service="short")) as c:
            assert "default" in c.get_all_databases()
        lapsed = POOL_EVENTS.labels("ticket_lapsed")._value.get()
        time.sleep(16)
        with connect(_uri(p), 30, client(stack, service="short")) as c:
            assert "default" in c.get_all_databases()
        assert POOL_EVENTS.labels("ticket_lapsed")._value.get() > lapsed
        sock = socket.create_connection(("localhost", p.addresses[0][1]), timeout=10)
        try:
            with pytest.raises(SaslError, match="(?i)expired"):
                client_handshake(sock, _sec(stack)["principals"]["metaproxy"], creds)
        finally:
            sock.close()
    finally:
        p.stop()


def test_kdc_outage_after_start(stack: dict[str, Any], kproxy: Any) -> None:
    """Calls go on while tickets last; /health and the metrics show the KDC's failure."""
    from prometheus_client import generate_latest

    from metaproxy_devstack.common import endpoints_path
    from metaproxy_devstack.components.kdc import kdc_command
    from metaproxy_devstack.launcher import Stack
    from metaproxy_devstack.procs import spawn, stop_group

    st = Stack(secure=True)
    assert st.is_running()
    kdc_pid = st.pids["kdc"]
    cl = client(stack)
    # tickets for the proxy (the client's) and for the HMS (the proxy's) are in hand
    with connect(_uri(kproxy), 30, cl) as c:
        assert "default" in c.get_all_databases()
    login = kproxy.state.security.login
    stop_group(kdc_pid, grace_s=5)
    try:
        with connect(_uri(kproxy), 30, cl) as c:
            assert "default" in c.get_all_databases()
        assert login.renew() is False
        health = kproxy.health()["kerberos"]
        assert health["kdc_reachable"] is False and health["ticket_seconds_left"] > 0
        assert b'metaproxy_kerberos_renewals_total{outcome="failed"}' in generate_latest()
    finally:
        # the same realm database again, and the stack's records name the new process
        argv, env = kdc_command(st)
        pid = spawn(argv, env, st.logs / "kdc.log", cwd=st.dir)
        (st.dir / "pids" / "kdc.pid").write_text(str(pid))
        ep = json.loads(endpoints_path(st.dir).read_text())
        ep["pids"]["kdc"] = pid
        endpoints_path(st.dir).write_text(json.dumps(ep, indent=2, sort_keys=True))
        for _ in range(40):
            if login.renew():
                break
            time.sleep(0.25)
    assert kproxy.health()["kerberos"]["kdc_reachable"] is True


def test_no_secret_or_ticket_in_the_logs(stack: dict[str, Any], trino_query: Any, tpcds: Any) -> None:
    trino_query("SELECT count(*) FROM item", catalog="onprem")
    logs = Path(stack["config"]).parent.parent / "logs"
    secrets = [stack["s3_secret_key"], stack["gateway_secret_key"], "Negotiate YII", "YIIC"]
    for name in ("proxy.log", "gateway.log", "proxy-audit.log"):
        text = (logs / name).read_text(errors="replace")
        for s in secrets:
            assert s not in text, f"{s[:8]}… in {name}"
    for role, path in _sec(stack)["keytabs"].items():
        raw = Path(path).read_bytes()
        assert os.environ.get("KRB5CCNAME", "") != path, role
        assert raw[-32:] not in (logs / "proxy.log").read_bytes()


def test_tickets_are_renewed_before_they_end(stack: dict[str, Any]) -> None:
    """A principal whose tickets live 15 s, looked at every second: a new ticket comes from the
    keytab once less than half its life is left, without any connection asking for one."""
    import threading

    from metaproxy.security.kerberos import RENEWALS

    s = _sec(stack)
    login = KerberosLogin(
        s["principals"]["short"], s["keytabs"]["short"], renew_before_s=600, check_interval_s=1
    )
    stop = threading.Event()
    before = RENEWALS.labels("ok")._value.get()
    login.start(stop)
    try:
        time.sleep(10)
        assert RENEWALS.labels("ok")._value.get() >= before + 2  # the login, then a renewal
        assert login.seconds_left() > 5
        assert login.status()["kdc_reachable"] is True
    finally:
        stop.set()
