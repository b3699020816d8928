"""Mounts: logical paths bound to a UFS (or a union of several), and URI normalisation.

A mount such as ``/tpcds → hdfs://nn:8020/warehouse/tpcds`` is the unit of everything
metaproxy does to locations: the proxy rewrites locations under a mount, the gateway serves
``s3://<gateway bucket>/tpcds/<rest>`` from it, the migration loop moves data below it.

This module knows URIs and prefixes only — no sockets, no Thrift, no cache. It never lets a
path escape its mount: :meth:`MountTable.resolve_key` refuses ``..``, ``.``, empty segments,
backslashes and control characters before any UFS is asked for anything.

Normalisation (applied to both the mount prefix and a location before they are compared):
scheme and host lower-cased, ``s3a``/``s3n`` treated as ``s3``, the default port of the
scheme dropped (``hdfs``: 8020), percent-escapes of unreserved characters decoded and other
escapes upper-cased (RFC 3986 §6.2.2), repeated slashes folded, no trailing slash. Only the
*prefix* is normalised for matching; the rest of a location is carried over byte for byte, so
paths with spaces, ``%``, ``=`` or non-ASCII characters survive a round trip unchanged.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import sqlite_utils

from metaproxy.config import Config, MountConfig

DEFAULT_PORTS = {"hdfs": 8020, "webhdfs": 9870, "http": 80, "https": 443}
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$", re.DOTALL)
_SLASHES_RE = re.compile(r"/{2,}")


class MountError(ValueError):
    """A mount definition is invalid, or a mount operation cannot be done."""


def _normalize_escapes(path: str) -> str:
    def fix(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return _PCT_RE.sub(fix, path)


def split_uri(uri: str) -> tuple[str, str, str] | None:
    """``(scheme, authority, path)`` of a ``scheme://authority/path`` URI, normalised; or None."""
    m = _URI_RE.match(uri.strip())
    if not m:
        return None
    scheme = m.group(1).lower()
    scheme = SCHEME_ALIASES.get(scheme, scheme)
    authority = m.group(2)
    userinfo, _, hostport = authority.rpartition("@")
    host, sep, port = hostport.partition(":")
    if sep and port.isdigit() and DEFAULT_PORTS.get(scheme) == int(port):
        sep, port = "", ""
    if scheme == "s3":
        # bucket names are case-sensitive in path style but S3 forbids upper case anyway
        authority = host + (sep + port)
    else:
        authority = (userinfo + "@" if userinfo else "") + host.lower() + sep + port
    path = _SLASHES_RE.sub("/", _normalize_escapes(m.group(3))) or "/"
    return scheme, authority, path


def normalize_uri(uri: str) -> str:
    """The canonical form of a UFS URI used for matching (see the module docstring).

    A string that is not ``scheme://authority/path`` is returned stripped but otherwise as is.
    """
    parts = split_uri(uri)
    if parts is None:
        return uri.strip()
    scheme, authority, path = parts
    if len(path) > 1:
        path = path.rstrip("/")
    return f"{scheme}://{authority}{path}" if path != "/" else f"{scheme}://{authority}"


def scheme_of(uri: str) -> str:
    parts = split_uri(uri)
    return parts[0] if parts else ""


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
        # every member prefix, longest first: first match wins
        self._by_prefix: list[tuple[tuple[str, str, tuple[str, ...]], str, Mount]] = sorted(
            ((_prefix_key(u), u, m) for m in self.mounts for u in m.ufs),
            key=lambda entry: len(entry[0][2]),
            reverse=True,
        )
        self._by_name: list[Mount] = sorted(self.mounts, key=lambda m: len(m.name), reverse=True)
        # fast path: locations spelled exactly like a configured prefix need no normalisation.
        # It is exact only if every prefix on one file system is spelled the same way up to its
        # path (else a longer prefix could match in another spelling), so it is off otherwise.
        self._raw: list[tuple[str, Mount]] = sorted(
            ((u, m) for m in self.mounts for u in m.ufs), key=lambda um: len(um[0]), reverse=True
        )
        spellings: dict[tuple[str, str], set[str]] = {}
        for u, _ in self._raw:
            key = _prefix_key(u)
            spellings.setdefault(key[:2], set()).add(
                u.split("://", 1)[0] + "://" + u.split("://", 1)[1].split("/", 1)[0]
            )
        if any(len(v) > 1 for v in spellings.values()):
            self._raw = []

    def __len__(self) -> int:
        return len(self.mounts)

    def __iter__(self) -> Iterator[Mount]:
        return iter(self.mounts)

    def get(self, path: str) -> Mount | None:
        p = "/" + path.strip("/")
        return next((m for m in self.mounts if m.path == p), None)

    def match_ufs(self, location: str) -> UfsMatch | None:
        """The mount member a UFS location lies under (longest prefix), or None.

        Scheme and authority are compared normalised, the path segment by segment with escapes
        normalised; the returned ``rest`` keeps the caller's own bytes for every segment.
        """
        for prefix, mount in self._raw:
            if location.startswith(prefix):
                n = len(prefix)
                if len(location) == n or location[n] == "/":
                    rest = location[n:].strip("/")
                    if "//" not in rest and "?" not in rest:
                        return UfsMatch(mount, prefix, rest)
                break  # same spelling but not at a segment boundary: let the full match decide
        m = _URI_RE.match(location.strip())
        if m is None:
            return None
        parts = split_uri(location)
        assert parts is not None
        scheme, authority, _ = parts
        raw_segments = [s for s in m.group(3).split("?", 1)[0].split("/") if s]
        norm_segments = [_normalize_escapes(s) for s in raw_segments]
        for (p_scheme, p_authority, p_segments), prefix, mount in self._by_prefix:
            k = len(p_segments)
            if p_scheme == scheme and p_authority == authority and tuple(norm_segments[:k]) == p_segments:
                return UfsMatch(mount, prefix, "/".join(raw_segments[k:]))
        return None

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


def _prefix_key(prefix: str) -> tuple[str, str, tuple[str, ...]]:
    parts = split_uri(prefix)
    assert parts is not None, prefix
    return parts[0], parts[1], tuple(s for s in parts[2].split("/") if s)


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
# persistence: mounts added with `metaproxy mount add` live in the state DB

MOUNTS_TABLE = "mounts"


def _ensure_table(db: sqlite_utils.Database) -> None:
    if MOUNTS_TABLE not in db.table_names():
        db[MOUNTS_TABLE].create(  # type: ignore[union-attr]
            {"path": str, "ufs": str, "read_priority": str, "create_target": str, "created_at": float},
            pk="path",
            if_not_exists=True,
        )


def stored_mounts(db: sqlite_utils.Database) -> list[Mount]:
    """Mounts added at run time (``metaproxy mount add``)."""
    _ensure_table(db)
    out = []
    for row in db[MOUNTS_TABLE].rows:
        out.append(
            make_mount(
                row["path"],
                json.loads(row["ufs"]),
                json.loads(row["read_priority"]),
                row["create_target"],
                "state",
            )
        )
    return out


def load_mount_table(cfg: Config, db: sqlite_utils.Database | None) -> MountTable:
    """Mounts from the config file plus those stored in the state DB."""
    mounts = [Mount.from_config(m) for m in cfg.mounts]
    if db is not None:
        known = {m.path for m in mounts}
        mounts.extend(m for m in stored_mounts(db) if m.path not in known)
    return MountTable(mounts)


def add_mount(cfg: Config, db: sqlite_utils.Database, mount: Mount) -> None:
    """Store a new mount; refuses a path that exists or a prefix another mount already serves."""
    table = load_mount_table(cfg, db)
    if table.get(mount.path):
        raise MountError(f"mount {mount.path} exists already")
    for other in table:
        for u in mount.ufs:
            for v in other.ufs:
                if normalize_uri(u) == normalize_uri(v):
                    raise MountError(f"{u} is already mounted at {other.path}")
    _ensure_table(db)
    db[MOUNTS_TABLE].insert(  # type: ignore[union-attr]
        {
            "path": mount.path,
            "ufs": json.dumps(list(mount.ufs)),
            "read_priority": json.dumps(list(mount.read_priority)),
            "create_target": mount.create_target,
            "created_at": time.time(),
        }
    )


def remove_mount(cfg: Config, db: sqlite_utils.Database, path: str) -> Mount:
    """Remove a stored mount. Mounts declared in the config file are removed there."""
    p = "/" + path.strip("/")
    for mc in cfg.mounts:
        if mc.path == p:
            raise MountError(f"mount {p} is declared in {cfg.source}; remove it there")
    _ensure_table(db)
    rows = list(db[MOUNTS_TABLE].rows_where("path = ?", [p]))
    if not rows:
        raise MountError(f"no mount at {p}")
    db[MOUNTS_TABLE].delete(p)  # type: ignore[union-attr]
    row = rows[0]
    return make_mount(
        row["path"], json.loads(row["ufs"]), json.loads(row["read_priority"]), row["create_target"]
    )
