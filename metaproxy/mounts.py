"""Mounts: logical paths bound to a UFS (or a union of several).

A mount such as ``/tpcds → hdfs://nn:8020/warehouse/tpcds`` is the unit of everything
metaproxy does to locations: the proxy rewrites locations under a mount, the gateway serves
``s3://<gateway bucket>/tpcds/<rest>`` from it, the migration loop moves data below it.

This module knows URIs and prefixes only — no sockets, no Thrift, no cache. It never lets a
path escape its mount: :meth:`MountTable.resolve_key` refuses ``..``, ``.``, empty segments,
backslashes and control characters before any UFS is asked for anything.

Locations are matched to mount members by :class:`metaproxy.uri.PrefixMatcher` (normalised
prefix, longest first; the rest of a location carried over byte for byte).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from metaproxy.config import Config, MountConfig
from metaproxy.state import StateDB
from metaproxy.state.mounts import MountRow, delete_mount, insert_mount, stored_mounts
from metaproxy.uri import SCHEME_ALIASES, PrefixMatcher, normalize_uri, scheme_of, split_uri


class MountError(ValueError):
    """A mount definition is invalid, or a mount operation cannot be done."""


@dataclass(frozen=True)
class Mount:
    """A logical path bound to one UFS prefix, or to a union of several (one per scheme)."""

    path: str
    #: member UFS prefixes as configured (no trailing slash); matching normalises them
    ufs: tuple[str, ...]
    read_priority: tuple[str, ...]
    create_target: str
    source: str = "config"  # "config" (declared in the TOML file) or "state" (metaproxy mount add)

    @property
    def name(self) -> str:
        """The mount path without its leading slash: the first key segment(s) at the gateway."""
        return self.path.strip("/")

    @property
    def is_union(self) -> bool:
        return len(self.ufs) > 1

    def ufs_for(self, scheme: str) -> str:
        """The member UFS prefix with this scheme."""
        for u in self.ufs:
            if scheme_of(u) == SCHEME_ALIASES.get(scheme, scheme):
                return u
        raise MountError(f"mount {self.path} has no {scheme} member")

    @property
    def create_ufs(self) -> str:
        """The UFS prefix new tables and partitions under this mount are created on."""
        return self.ufs_for(self.create_target)

    def read_order(self) -> list[str]:
        """Member UFS prefixes in read priority order."""
        return [self.ufs_for(s) for s in self.read_priority]

    @classmethod
    def from_config(cls, mc: MountConfig, source: str = "config") -> Mount:
        return make_mount(mc.path, mc.ufs, mc.read_priority, mc.create_target, source)


def make_mount(
    path: str,
    ufs: Sequence[str],
    read_priority: Sequence[str] = (),
    create_target: str = "",
    source: str = "state",
) -> Mount:
    """Validate and normalise a mount definition."""
    p = "/" + path.strip().strip("/")
    segments = p.strip("/").split("/")
    if p == "/" or any(s in ("", ".", "..") or "\\" in s or "\x00" in s for s in segments):
        raise MountError(f"mount path {path!r}: expected an absolute path such as /tpcds, without . or ..")
    if not ufs:
        raise MountError(f"mount {p}: at least one UFS URI is required")
    normalised: list[str] = []
    schemes: list[str] = []
    for u in ufs:
        parts = split_uri(u)
        if parts is None or not parts[1]:
            raise MountError(f"mount {p}: {u!r} is not a UFS URI such as hdfs://namenode:8020/warehouse")
        if parts[0] in schemes:
            raise MountError(f"mount {p}: two members with scheme {parts[0]}")
        schemes.append(parts[0])
        # kept as the operator wrote it: reverse mapping must give back the HMS's own spelling
        normalised.append(u.strip().rstrip("/"))
    prio = tuple(SCHEME_ALIASES.get(s.lower(), s.lower()) for s in read_priority) or tuple(schemes)
    if sorted(prio) != sorted(schemes):
        raise MountError(f"mount {p}: read priority {list(prio)} must list each member scheme {schemes} once")
    target = SCHEME_ALIASES.get(create_target.lower(), create_target.lower()) if create_target else schemes[0]
    if target not in schemes:
        raise MountError(f"mount {p}: create target {create_target!r} is not one of {schemes}")
    return Mount(p, tuple(normalised), prio, target, source)


@dataclass(frozen=True)
class UfsMatch:
    """A location matched to a mount member: ``ufs_prefix`` + ``/`` + ``rest`` is the location."""

    mount: Mount
    ufs_prefix: str
    rest: str


class MountTable:
    """An immutable set of mounts with longest-prefix lookups in both directions."""

    def __init__(self, mounts: Iterable[Mount] = ()) -> None:
        self.mounts: tuple[Mount, ...] = tuple(sorted(mounts, key=lambda m: m.path))
        paths = [m.path for m in self.mounts]
        if len(set(paths)) != len(paths):
            raise MountError("two mounts with the same path")
        self._members: PrefixMatcher[Mount] = PrefixMatcher((u, m) for m in self.mounts for u in m.ufs)
        self._by_name: list[Mount] = sorted(self.mounts, key=lambda m: len(m.name), reverse=True)

    def __len__(self) -> int:
        return len(self.mounts)

    def __iter__(self) -> Iterator[Mount]:
        return iter(self.mounts)

    def get(self, path: str) -> Mount | None:
        p = "/" + path.strip("/")
        return next((m for m in self.mounts if m.path == p), None)

    def match_ufs(self, location: str) -> UfsMatch | None:
        """The mount member a UFS location lies under (longest prefix), or None.

        The returned ``rest`` keeps the caller's own bytes for every segment.
        """
        hit = self._members.match(location)
        return None if hit is None else UfsMatch(hit.value, hit.prefix, hit.rest)

    def gateway_key(self, location: str) -> str | None:
        """The gateway object key (``<mount name>/<rest>``) serving a UFS location, or None."""
        m = self.match_ufs(location)
        if m is None:
            return None
        return f"{m.mount.name}/{m.rest}" if m.rest else m.mount.name

    def resolve_key(self, key: str) -> tuple[Mount, str] | None:
        """Split a gateway object key into its mount and the rest of the path.

        Returns None for a key outside every mount *or* one that tries to leave it.
        """
        if not key_is_safe(key):
            return None
        for mount in self._by_name:
            name = mount.name
            if key == name or key.startswith(name + "/"):
                return mount, key[len(name) + 1 :]
        return None

    def ufs_location(self, mount: Mount, rest: str, member: str | None = None) -> str:
        """The UFS URI of ``rest`` below ``mount`` on one member (default: first read priority)."""
        prefix = mount.ufs_for(member) if member else mount.read_order()[0]
        return f"{prefix}/{rest}" if rest else prefix


_BAD_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def key_is_safe(key: str) -> bool:
    """True if a (decoded) gateway key cannot name anything outside its mount."""
    if not key or key.startswith("/") or _BAD_KEY_CHARS.search(key):
        return False
    segments = key.split("/")
    # a trailing slash (a "directory" key) is allowed; empty inner segments are not
    if segments and segments[-1] == "":
        segments = segments[:-1]
    return all(s not in ("", ".", "..") for s in segments)


# --------------------------------------------------------------------------------------------
# mounts added with `metaproxy mount add` live in the state DB


def _from_row(row: MountRow) -> Mount:
    return make_mount(row.path, row.ufs, row.read_priority, row.create_target, "state")


def load_mount_table(cfg: Config, db: StateDB | None) -> MountTable:
    """Mounts from the config file plus those stored in the state DB."""
    mounts = [Mount.from_config(m) for m in cfg.mounts]
    if db is not None:
        known = {m.path for m in mounts}
        mounts.extend(m for m in map(_from_row, stored_mounts(db)) if m.path not in known)
    return MountTable(mounts)


def add_mount(cfg: Config, db: StateDB, mount: Mount) -> None:
    """Store a new mount; refuses a path that exists or a prefix another mount already serves."""
    table = load_mount_table(cfg, db)
    if table.get(mount.path):
        raise MountError(f"mount {mount.path} exists already")
    for other in table:
        for u in mount.ufs:
            for v in other.ufs:
                if normalize_uri(u) == normalize_uri(v):
                    raise MountError(f"{u} is already mounted at {other.path}")
    insert_mount(db, MountRow(mount.path, mount.ufs, mount.read_priority, mount.create_target))


def remove_mount(cfg: Config, db: StateDB, path: str) -> Mount:
    """Remove a stored mount. Mounts declared in the config file are removed there."""
    p = "/" + path.strip("/")
    for mc in cfg.mounts:
        if mc.path == p:
            raise MountError(f"mount {p} is declared in {cfg.source}; remove it there")
    row = delete_mount(db, p)
    if row is None:
        raise MountError(f"no mount at {p}")
    return _from_row(row)
