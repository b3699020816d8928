"""UFS URIs: how two spellings of one location are recognised, and the one prefix matcher.

Every place that asks "which configured prefix does this location lie under?" — a mount's
members (:class:`metaproxy.mounts.MountTable`), a migrated unit's flip
(:class:`metaproxy.rewrite.PrefixMap`) — asks a :class:`PrefixMatcher`. It knows strings only:
no mounts, no sockets, no storage.

Normalisation (applied to a prefix and a location before they are compared): scheme and host
lower-cased, ``s3a``/``s3n`` treated as ``s3``, the default port of the scheme dropped
(``hdfs``: 8020), percent-escapes of unreserved characters decoded and other escapes
upper-cased (RFC 3986 §6.2.2), repeated slashes folded, no trailing slash. Only the *prefix*
is normalised for matching; the rest of a location is carried over byte for byte, so paths
with spaces, ``%``, ``=`` or non-ASCII characters survive a round trip unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

DEFAULT_PORTS = {"hdfs": 8020, "webhdfs": 9870, "http": 80, "https": 443}
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_URI_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$", re.DOTALL)
_SLASHES_RE = re.compile(r"/{2,}")

V = TypeVar("V")


def normalize_escapes(path: str) -> str:
    """Decode escapes of unreserved characters, upper-case the others (RFC 3986 §6.2.2)."""

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
    path = _SLASHES_RE.sub("/", normalize_escapes(m.group(3))) or "/"
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
    """The normalised scheme of a URI (``s3a`` → ``s3``), or '' for a string that is not one."""
    parts = split_uri(uri)
    return parts[0] if parts else ""


def bucket_and_key(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")`` (the key as written, without a leading slash)."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    bucket, _, key = rest.partition("/")
    return bucket, key


def _segments(uri: str) -> tuple[str, str, list[str], list[str]] | None:
    """(scheme, authority, raw path segments, normalised segments) of a URI; no query part."""
    m = _URI_RE.match(uri.strip())
    if m is None:
        return None
    parts = split_uri(uri)
    assert parts is not None
    raw = [s for s in m.group(3).split("?", 1)[0].split("/") if s]
    return parts[0], parts[1], raw, [normalize_escapes(s) for s in raw]


@dataclass(frozen=True)
class PrefixHit(Generic[V]):
    """A location matched to a prefix: ``prefix`` (as configured) + ``/`` + ``rest`` is it."""

    prefix: str
    value: V
    rest: str


class PrefixMatcher(Generic[V]):
    """Configured URI prefixes, each with a value; :meth:`match` finds the longest one a
    location lies under, comparing whole path segments after normalisation.

    Lookups cost one dictionary probe per distinct prefix depth. A location spelled exactly
    like a prefix (the common case: the HMS stores what the operator configured) is matched by
    a plain string comparison first.
    """

    def __init__(self, entries: Iterable[tuple[str, V]]) -> None:
        self._by_key: dict[tuple[str, str, tuple[str, ...]], tuple[str, V]] = {}
        for prefix, value in entries:
            p = _segments(prefix)
            if p is None:
                raise ValueError(f"{prefix!r} is not a URI such as hdfs://namenode:8020/warehouse")
            key = (p[0], p[1], tuple(p[3]))
            self._by_key.setdefault(key, (prefix.strip().rstrip("/"), value))
        self._depths = sorted({len(k[2]) for k in self._by_key}, reverse=True)
        # the exact-spelling shortcut is right only if every prefix on one file system is
        # spelled the same way up to its path (else a longer prefix could match in another
        # spelling); otherwise it is off
        spellings: dict[tuple[str, str], set[str]] = {}
        for (scheme, authority, _), (prefix, _) in self._by_key.items():
            spellings.setdefault((scheme, authority), set()).add("/".join(prefix.split("/", 3)[:3]))
        self._raw: list[tuple[str, V]] = []
        if all(len(v) == 1 for v in spellings.values()):
            self._raw = sorted(
                ((p, v) for p, v in self._by_key.values()), key=lambda pv: len(pv[0]), reverse=True
            )

    def __len__(self) -> int:
        return len(self._by_key)

    def match(self, location: str) -> PrefixHit[V] | None:
        """The longest prefix ``location`` lies under, and the rest of it (in its own bytes)."""
        if not self._by_key:
            return None
        for prefix, value in self._raw:
            if location.startswith(prefix):
                n = len(prefix)
                if len(location) == n or location[n] == "/":
                    rest = location[n:].strip("/")
                    if "//" not in rest and "?" not in rest:
                        return PrefixHit(prefix, value, rest)
                break  # same spelling but not at a segment boundary: let the full match decide
        p = _segments(location)
        if p is None:
            return None
        scheme, authority, raw, norm = p
        for k in self._depths:
            if k > len(norm):
                continue
            hit = self._by_key.get((scheme, authority, tuple(norm[:k])))
            if hit is not None:
                return PrefixHit(hit[0], hit[1], "/".join(raw[k:]))
        return None

    def replace(self, location: str) -> str | None:
        """For a matcher whose values are replacement prefixes: ``location`` with its longest
        matching prefix replaced, or None."""
        hit = self.match(location)
        if hit is None:
            return None
        target = str(hit.value).rstrip("/")
        return f"{target}/{hit.rest}" if hit.rest else target
