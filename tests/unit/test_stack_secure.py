"""The secure stack's files, without starting it: metaproxy's config in both kinds of stack,
and the throw-away CA's certificate (what every client verifies)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from metaproxy.config import load_config
from metaproxy_devstack.components.kdc import PRINCIPALS, make_ca
from metaproxy_devstack.components.services import stack_config
from metaproxy_devstack.layout import StackLayout

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("secure", [False, True])
def test_stack_config_parses_in_both_kinds_of_stack(tmp_path: Path, secure: bool) -> None:
    st = StackLayout(dir=tmp_path, secure=secure)
    cfg = load_config(stack_config(st))
    assert cfg.proxy.admin_tls is secure and cfg.gateway.tls is secure
    assert {lc.auth for lc in cfg.proxy.listeners} == {"kerberos" if secure else "none"}
    assert all(lc.tls is secure for lc in cfg.proxy.listeners)
    assert cfg.hdfs.auth == ("kerberos" if secure else "simple")
    assert cfg.gateway.endpoint.startswith("https://localhost:" if secure else "http://127.0.0.1:")
    if secure:
        assert cfg.metastore.kerberos_principal == PRINCIPALS["metaproxy"].full
        assert cfg.hdfs.webhdfs.startswith("https://localhost:")
        assert cfg.tls.ca_file and cfg.tls.cert_file and cfg.tls.key_file
    else:
        assert cfg.metastore.kerberos_principal == ""


def test_the_throw_away_ca_issues_a_certificate_clients_verify(tmp_path: Path) -> None:
    files = make_ca(StackLayout(dir=tmp_path))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(files.cert, files.key)
    client = ssl.create_default_context(cafile=str(files.ca))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert files.keystore.stat().st_size > 0 and files.truststore.stat().st_size > 0
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
