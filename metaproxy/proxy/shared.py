"""What every connection of the proxy shares: the rules in force and the write policy.

The rules — mounts (config file + state DB), the migration loop's flips, and one
:class:`~metaproxy.rewrite.Rewriter` per profile — are reloaded every ``[proxy] mount_refresh``
and swapped in whole when they change, so a call always sees one consistent set.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from metaproxy.config import Config
from metaproxy.mounts import MountTable, load_mount_table
from metaproxy.proxy.dialect import Dialects
from metaproxy.proxy.metacache import MetadataCache
from metaproxy.proxy.metrics import STATE_UP
from metaproxy.proxy.pool import UpstreamPool
from metaproxy.proxy.upstream import reply_schema, reply_schema_db, request_schema, request_schema_db
from metaproxy.proxy.warmup import Warmup
from metaproxy.proxy.watch import UpstreamHealth
from metaproxy.rewrite import Rewriter
from metaproxy.security import security_for
from metaproxy.state import StateDB, open_state, shown, state_url
from metaproxy.state.units import load_flips

#: once the HMS is found not answering, a call that has heard nothing from it for this long is
#: ended (at most ``probe_timeout``)
STALLED_S = 1.0

log = logging.getLogger("metaproxy.proxy")


@dataclass
class ProxyState:
    """What every connection shares: config, and the current rewriter per profile."""

    config: Config
    #: the flips to serve; by default those the migration loop recorded in the state DB
    flips_source: Callable[[], Mapping[str, str]] | None = None
    rewriters: dict[str, Rewriter] = field(default_factory=dict)
    mounts: MountTable = field(default_factory=MountTable)
    version: int = 0
    writable: list[re.Pattern[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        ms = self.config.metastore
        self.writable = [re.compile(p) for p in ms.writable_databases]
        maps_dbs = bool(ms.database_prefix or ms.database_map)
        self.request_schema = request_schema_db if maps_dbs else request_schema
        self.reply_schema = reply_schema_db if maps_dbs else reply_schema
        self._db: StateDB | None = None
        #: the flips in force, and why the state could not be read last time ('' when it could)
        self._flips: dict[str, str] = {}
        self.state_problem = ""
        #: what each upstream is known not to serve (shared by every connection)
        self.dialects = Dialects()
        #: open upstream connections between client connections
        #: Kerberos to the HMS and for the kerberos listeners (no login without a principal)
        self.security = security_for(self.config)
        self.pool = UpstreamPool(ms, self.config.proxy.max_message_bytes, self.security)
        px = self.config.proxy
        #: answers of read-only calls, and whether the HMS answers at all
        self.metacache = MetadataCache(
            px.metadata_cache_bytes, px.metadata_stale_after_s, px.stale_if_error_s
        )
        self.health = UpstreamHealth()
        #: asks again, after an event, what engines asked (set by the proxy when configured)
        self.warmup: Warmup | None = None
        # calls that were already waiting when the HMS stopped answering are not left to wait
        # for call_timeout: every call that has heard nothing for a moment is ended once the
        # watch's look failed (one still receiving shows the HMS answers it, and goes on)
        stalled_s = min(px.probe_timeout_s, STALLED_S)
        self.health.on_failure.append(lambda: self.pool.abort_stalled(stalled_s))
        self.refresh()

    def _state(self) -> StateDB:
        if self._db is None:
            self._db = open_state(self.config.state, lazy=True)
        return self._db

    def close(self) -> None:
        self.pool.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def refresh(self) -> None:
        """Reload mounts (config + state DB) and flips; swap in new rewriters if they changed.

        While the state cannot be read (a PostgreSQL server down, say) the rules last read stay
        in force — no migration loop can flip without the state either — and ``/health`` and
        ``metaproxy_proxy_state_up`` say so."""
        problem = ""
        try:
            mounts = load_mount_table(self.config, self._state())
        except Exception as e:  # a broken state DB must not take the proxy down
            problem = f"could not reload mounts from {shown(state_url(self.config.state))}: {e}"
            mounts = self.mounts if self.mounts.mounts else load_mount_table(self.config, None)
        try:
            if problem:
                raise RuntimeError("the state is unreachable")
            flips = dict(self.flips_source() if self.flips_source is not None else load_flips(self._state()))
        except Exception as e:
            problem = problem or f"could not reload flips: {e}"
            flips = dict(self._flips)
        if problem and problem != self.state_problem:
            log.warning("%s; serving the rules last read (%d flipped units)", problem, len(flips))
        elif self.state_problem and not problem:
            log.info("the state answers again")
        self.state_problem = problem
        STATE_UP.set(0 if problem else 1)
        self._flips = flips
        key = (mounts.mounts, tuple(sorted(flips.items())))
        if self.rewriters and key == getattr(self, "_key", None):
            return
        if self.rewriters:  # kept answers were rewritten by the rules that are going
            self.metacache.flush(cause="rules")
        self._key = key
        self.mounts = mounts
        ms = self.config.metastore
        self.rewriters = {
            p: Rewriter.build(
                p,
                mounts,
                self.config.gateway.bucket,
                flips,
                write_back=self.config.migrate.write_back_to_hms,
                db_map=ms.database_map,
                db_prefix=ms.database_prefix,
            )
            for p in ("cloud", "onprem", "passthrough")
        }
        self.version += 1
        log.info("rules v%d: %d mounts, %d flipped units", self.version, len(mounts), len(flips))

    def write_refusal(self, method: str, databases: list[str]) -> str | None:
        """Why a write call is refused, or None if it is allowed."""
        ms = self.config.metastore
        if not ms.allow_writes:
            return (
                f"metaproxy: {method} changes the metastore and the proxy is read-only; "
                f"set [metastore] allow_writes = true (and writable_databases) in {self.config.source} to allow it"
            )
        if self.writable:
            if not databases:
                return (
                    f"metaproxy: {method} names no database; writable_databases allows only listed databases"
                )
            for db in databases:
                if not any(p.fullmatch(db) for p in self.writable):
                    return (
                        f"metaproxy: database {db!r} is not writable through the proxy; "
                        f"add it to [metastore] writable_databases in {self.config.source}"
                    )
        return None
