"""Kerberos and TLS for metaproxy's connections.

- :mod:`metaproxy.security.sasl` — SASL GSSAPI over Thrift, client and server ends, and the
  framed socket both leave behind;
- :mod:`metaproxy.security.kerberos` — the process's own principal, its keytab and tickets;
- this module — what a configuration asks for, in one object per process (:class:`Security`):
  the login, how to open a connection to the HMS (:meth:`Security.hms_socket`), the TLS contexts
  of the listeners, the gateway, the admin endpoints and of clients.

TLS verification is never turned off: a client context always checks the peer's certificate
against the configured CA file (or the system's) and its host name.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metaproxy.security.kerberos import KerberosLogin, KeytabError, expand_host
from metaproxy.security.sasl import SaslError, client_handshake

if TYPE_CHECKING:
    from metaproxy.config import Config

__all__ = [
    "KerberosLogin",
    "KeytabError",
    "SaslError",
    "Security",
    "client_security",
    "expand_host",
    "security_for",
    "spnego_auth",
    "use_for_clients",
]


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS server context serving ``cert_file`` (with its chain) and ``key_file``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise KeytabError(f"cannot load the TLS certificate {cert_file} / key {key_file}: {e}") from None
    return ctx


def client_context(ca_file: str = "") -> ssl.SSLContext:
    """A TLS client context that verifies the server (against ``ca_file`` if given)."""
    return ssl.create_default_context(cafile=ca_file or None)


@dataclass
class Security:
    """What one process's configuration asks for: its Kerberos login (None: no Kerberos) and
    its TLS files."""

    login: KerberosLogin | None = None
    #: the HMS's service principal (``_HOST``: the host of the URI connected to)
    service_principal: str = ""
    #: the SASL layers accepted from the HMS, strongest first
    layers: tuple[str, ...] = ("auth-conf", "auth-int", "auth")
    #: the metastore is reached over TLS (verified with ca_file): a proxy listener with tls = true
    hms_tls: bool = False
    #: WebHDFS with SPNEGO as the login's principal ([hdfs] auth = "kerberos")
    spnego: bool = False
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: bool = False

    @property
    def kerberos(self) -> bool:
        return self.login is not None

    def start(self) -> None:
        """Log in (start-up fails if it cannot) and keep tickets renewed; once per process."""
        if self.login is not None and not self._started:
            self.login.start(self._stop)
            self._started = True

    def stop(self) -> None:
        self._stop.set()

    def hms_socket(
        self, host: str, port: int, connect_timeout: float, call_timeout: float, max_frame: int
    ) -> Any:
        """A connection to the HMS at ``host:port``: authenticated with SASL GSSAPI when this
        process has a Kerberos login, else a plain socket."""
        sock = socket.create_connection((host, port), timeout=connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.hms_tls:
            try:
                sock = self.client_tls().wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        if self.login is None:
            sock.settimeout(call_timeout)
            return sock
        try:
            service = expand_host(self.service_principal, host)
            conn = client_handshake(sock, service, self.login.initiator(), self.layers, max_frame)
        except BaseException:
            sock.close()
            raise
        conn.settimeout(call_timeout)
        return conn

    def server_tls(self) -> ssl.SSLContext:
        if not (self.cert_file and self.key_file):
            raise KeytabError("TLS is on but [tls] cert_file and key_file are not both set")
        return server_context(self.cert_file, self.key_file)

    def client_tls(self) -> ssl.SSLContext:
        return client_context(self.ca_file)

    def status(self) -> dict[str, Any] | None:
        return self.login.status() if self.login is not None else None


_lock = threading.Lock()
#: by the config object's id, with the object itself (so the id is not reused meanwhile)
_by_config: dict[int, tuple[Config, Security]] = {}


def security_for(config: Config) -> Security:
    """The :class:`Security` of ``config`` (one per config object, so one login per process);
    :class:`KeytabError` naming the file when the keytab cannot be used."""
    with _lock:
        found = _by_config.get(id(config))
        if found is None:
            ms, krb, tls = config.metastore, config.kerberos, config.tls
            login = None
            if ms.kerberos_principal:
                login = KerberosLogin(
                    expand_host(ms.kerberos_principal), ms.keytab, krb.renew_before_s, krb.check_interval_s
                )
            sec = Security(
                login=login,
                service_principal=ms.service_principal,
                layers=ms.sasl_qop,
                spnego=config.hdfs.auth == "kerberos",
                cert_file=tls.cert_file,
                key_file=tls.key_file,
                ca_file=tls.ca_file,
            )
            _by_config[id(config)] = (config, sec)
        else:
            sec = found[1]
    use_for_clients(sec)
    return sec


_clients: Security | None = None


def use_for_clients(security: Security | None) -> None:
    """Make ``security`` what this process's HMS and WebHDFS clients use when they are given
    none (the services set their config's; the development tools the stack's)."""
    global _clients
    _clients = security


def client_security() -> Security | None:
    """What :func:`use_for_clients` set, if anything."""
    return _clients


def spnego_auth(security: Security) -> Any:
    """A ``requests`` auth object doing SPNEGO as the login's principal."""
    from requests_gssapi import OPTIONAL, HTTPSPNEGOAuth

    assert security.login is not None
    return HTTPSPNEGOAuth(creds=security.login.initiator(), mutual_authentication=OPTIONAL)
