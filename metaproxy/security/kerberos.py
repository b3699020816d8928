"""metaproxy's own Kerberos identity: a principal, its keytab, and tickets kept fresh.

A :class:`KerberosLogin` checks at start-up that the keytab can be read and holds the principal
(:class:`KeytabError`, naming the file, stops start-up otherwise), gets a ticket-granting ticket
from it into a memory credential cache of its own (``gssapi`` credential acquisition with a
client keytab — no ``kinit``, no file cache, nothing of the user's), and gets a new one before
the old one ends: :meth:`KerberosLogin.check` runs every ``[kerberos] check_interval`` and renews
once less than ``renew_before`` (or half the ticket's life) is left. When the KDC cannot be
reached, the ticket in hand is used until it ends; the failure is counted
(``metaproxy_kerberos_renewals_total{outcome="failed"}``) and shown by :meth:`status`, which
``/health`` includes. A connection that needs credentials once the ticket has ended gets a
new one first (:meth:`initiator`).

Acceptor credentials (a kerberos listener) come from the keytab alone and need no KDC.

Nothing here logs a ticket or a key.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from typing import Any

from prometheus_client import Counter, Gauge

from metaproxy.config import ConfigError

log = logging.getLogger("metaproxy.kerberos")

RENEWALS = Counter("metaproxy_kerberos_renewals", "Tickets obtained from the keytab", ["outcome"])
TICKET_LEFT = Gauge("metaproxy_kerberos_ticket_seconds_left", "Seconds the current ticket has left")
KDC_UP = Gauge("metaproxy_kerberos_kdc_up", "1 if the last ticket request reached the KDC, else 0")

_caches = itertools.count(1)


class KeytabError(ConfigError):
    """The keytab is missing, unreadable or lacks the principal."""


def expand_host(principal: str, host: str | None = None) -> str:
    """``_HOST`` in a principal → ``host`` (lower case), by default this machine's name."""
    if "_HOST" not in principal:
        return principal
    return principal.replace("_HOST", (host or socket.getfqdn()).lower())


def check_keytab(path: str, principal: str) -> None:
    """:class:`KeytabError` unless ``path`` is a readable keytab holding ``principal``."""
    if not path:
        raise KeytabError(f"no keytab configured for {principal}")
    if not os.path.exists(path):
        raise KeytabError(f"keytab {path} does not exist")
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError as e:
        raise KeytabError(f"keytab {path} cannot be read: {e.strerror}") from None
    if head not in (b"\x05\x01", b"\x05\x02"):
        raise KeytabError(f"keytab {path} is not a Kerberos keytab")
    import gssapi

    try:
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        gssapi.Credentials(name=name, usage="accept", store={"keytab": path})
    except gssapi.exceptions.GSSError as e:
        from metaproxy.security.sasl import gss_reason

        raise KeytabError(f"keytab {path} holds no key of {principal}: {gss_reason(e)}") from None


class KerberosLogin:
    """One principal logged in from its keytab, its tickets renewed before they end."""

    def __init__(
        self, principal: str, keytab: str, renew_before_s: float = 600.0, check_interval_s: float = 60.0
    ) -> None:
        self.principal = principal
        self.keytab = keytab
        self.renew_before_s = renew_before_s
        self.check_interval_s = check_interval_s
        check_keytab(keytab, principal)
        self._lock = threading.Lock()
        self._creds: Any = None
        self._acceptor: Any = None
        #: when the current ticket ends, and how long it lived (time.monotonic())
        self._ends = 0.0
        self._life = 0.0
        self.last_renewal: float | None = None  # wall clock
        self.last_error: str | None = None
        self.failures = 0

    # -- tickets -------------------------------------------------------------------------

    def renew(self) -> bool:
        """Get a new ticket from the keytab (the old one stays in use if the KDC says no)."""
        import gssapi

        from metaproxy.security.sasl import gss_reason

        name = gssapi.Name(self.principal, gssapi.NameType.kerberos_principal)
        store: dict[bytes | str, bytes | str] = {
            "client_keytab": self.keytab,
            "ccache": f"MEMORY:metaproxy-{os.getpid()}-{next(_caches)}",
        }
        try:
            creds = gssapi.Credentials(name=name, usage="initiate", store=store)
            life = float(creds.lifetime)
        except gssapi.exceptions.GSSError as e:
            self.failures += 1
            self.last_error = gss_reason(e)
            RENEWALS.labels("failed").inc()
            KDC_UP.set(0)
            log.warning("kerberos: no new ticket for %s: %s", self.principal, self.last_error)
            return False
        with self._lock:
            self._creds = creds
            self._ends = time.monotonic() + life
            self._life = life
        self.last_renewal = time.time()
        self.last_error = None
        RENEWALS.labels("ok").inc()
        KDC_UP.set(1)
        TICKET_LEFT.set(life)
        log.info("kerberos: ticket for %s valid for %.0fs", self.principal, life)
        return True

    def seconds_left(self) -> float:
        return max(0.0, self._ends - time.monotonic()) if self._creds is not None else 0.0

    def due(self) -> bool:
        left = self.seconds_left()
        return left <= 0 or left < min(self.renew_before_s, self._life / 2)

    def check(self) -> None:
        """Renew if the ticket is due (the renewal thread calls this every check_interval)."""
        TICKET_LEFT.set(self.seconds_left())
        if self.due():
            self.renew()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.check_interval_s):
            try:
                self.check()
            except Exception as e:  # the thread must outlive any one failure
                log.warning("kerberos: renewal check failed: %s", e)

    def start(self, stop: threading.Event) -> threading.Thread:
        """Log in now (start-up fails if the KDC refuses) and keep renewing in a thread."""
        if not self.renew():
            raise KeytabError(f"cannot log in as {self.principal} from {self.keytab}: {self.last_error}")
        t = threading.Thread(target=self.run, args=(stop,), name="kerberos-renew", daemon=True)
        t.start()
        return t

    def initiator(self) -> Any:
        """Credentials to open a connection with: a new ticket first if this one has ended."""
        if self._creds is None or self.seconds_left() < 1.0:
            self.renew()
        with self._lock:
            if self._creds is None:
                raise KeytabError(f"no ticket for {self.principal}: {self.last_error}")
            return self._creds

    def acceptor(self) -> Any:
        """Credentials a kerberos listener accepts clients with (from the keytab)."""
        import gssapi

        if self._acceptor is None:
            name = gssapi.Name(self.principal, gssapi.NameType.kerberos_principal)
            self._acceptor = gssapi.Credentials(name=name, usage="accept", store={"keytab": self.keytab})
        return self._acceptor

    def status(self) -> dict[str, Any]:
        """For ``/health``: whose ticket, how long it has left, how the last renewal went."""
        return {
            "principal": self.principal,
            "keytab": self.keytab,
            "ticket_seconds_left": round(self.seconds_left(), 1),
            "last_renewal": self.last_renewal,
            "kdc_reachable": self.last_error is None,
            "renewal_failures": self.failures,
            "last_error": self.last_error,
        }
