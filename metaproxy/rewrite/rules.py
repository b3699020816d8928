"""Location rules: what a location becomes on the way out to a client, and back on the way in.

A :class:`Rewriter` is built from the mount table, the flip map of the migration loop and a
listener's profile, and is immutable: the proxy swaps in a new one when mounts or flips change.

Outbound (replies to the query engine), by profile:

* ``cloud`` — a migrated unit's location becomes its S3 location (longest flipped prefix wins,
  so the partitions of a flipped table follow it); a location under a mount's HDFS member
  becomes the gateway's ``s3://<gateway bucket>/<mount>/<rest>``; a database location under a
  union mount whose create target is S3 becomes the S3 member's location, so engines create new
  tables there;
* ``onprem`` — only migrated units change (to S3); HDFS stays HDFS;
* ``passthrough`` — nothing changes.

Inbound (requests that carry locations into the HMS), for every profile: a gateway location
becomes the UFS location it stands for (the create target's for new tables and partitions), and
a migrated unit's S3 location becomes its original HDFS location unless write-back is on — so
the on-prem HMS never stores an address the proxy invented. A gateway location that names no
mount is refused, never forwarded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from metaproxy.mounts import MountTable
from metaproxy.uri import PrefixMatcher, bucket_and_key, scheme_of, split_uri

DB_KIND = "db"
DB_NAME_KIND = "dbname"


class RewriteError(ValueError):
    """A location cannot be mapped safely (the call is refused, nothing reaches the HMS)."""


class PrefixMap:
    """URI prefix → replacement prefix; a location under a prefix (longest first, compared
    normalised by path segment) gets the replacement, the rest of it carried over as is."""

    def __init__(self, mapping: Mapping[str, str]) -> None:
        # a string that is not a URI can never match a location: it is left out
        self._matcher: PrefixMatcher[str] = PrefixMatcher(
            (prefix, target) for prefix, target in mapping.items() if split_uri(prefix) is not None
        )

    def __len__(self) -> int:
        return len(self._matcher)

    def lookup(self, location: str) -> str | None:
        """The location with its longest mapped prefix replaced, or None."""
        return self._matcher.replace(location)


@dataclass(frozen=True)
class Rewriter:
    """The location rules of one listener at one moment."""

    profile: str
    mounts: MountTable
    gateway_bucket: str
    flips: PrefixMap
    unflips: PrefixMap
    write_back: bool = False
    #: member UFS prefix → its scheme (computed once: this is on the hot path)
    schemes: Mapping[str, str] = field(default_factory=dict)
    #: database names: an explicit map (client name → upstream name) and/or a prefix clients see
    db_map: Mapping[str, str] = field(default_factory=dict)
    db_prefix: str = ""
    db_unmap: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        profile: str,
        mounts: MountTable,
        gateway_bucket: str,
        flips: Mapping[str, str] | None = None,
        write_back: bool = False,
        db_map: Mapping[str, str] | None = None,
        db_prefix: str = "",
    ) -> Rewriter:
        flips = flips or {}
        db_map = {k.lower(): v.lower() for k, v in (db_map or {}).items()}
        return cls(
            profile=profile,
            mounts=mounts,
            gateway_bucket=gateway_bucket,
            flips=PrefixMap(flips),
            unflips=PrefixMap({v: k for k, v in flips.items()}),
            write_back=write_back,
            schemes={u: scheme_of(u) for m in mounts for u in m.ufs},
            db_map=db_map,
            db_prefix=db_prefix.lower(),
            db_unmap={v: k for k, v in db_map.items()},
        )

    # -- database names -------------------------------------------------------------------

    @property
    def maps_databases(self) -> bool:
        return bool(self.db_map or self.db_prefix)

    def client_database(self, upstream: str) -> str | None:
        """The name a client sees for an upstream database (None: the same)."""
        name = upstream.lower()
        if name in self.db_unmap:
            return self.db_unmap[name]
        if self.db_prefix:
            return self.db_prefix + name
        return None

    def upstream_database(self, client: str) -> str | None:
        """The upstream name of a database a client names (None: the same).

        A name that is neither mapped nor prefixed passes unchanged: with a prefix configured,
        clients are shown only prefixed names, but the real names keep working.
        """
        name = client.lower()
        if name in self.db_map:
            return self.db_map[name]
        if self.db_prefix and name.startswith(self.db_prefix) and len(name) > len(self.db_prefix):
            return name[len(self.db_prefix) :]
        return None

    # -- outbound -------------------------------------------------------------------------

    def outbound(self, location: str, kind: str = "loc") -> str | None:
        """What a client is told instead of ``location`` (None: unchanged)."""
        if kind == DB_NAME_KIND:
            return self.client_database(location)
        if self.profile == "passthrough" or not location:
            return None
        flipped = self.flips.lookup(location)
        if flipped is not None:
            return flipped
        if self.profile != "cloud":
            return None
        m = self.mounts.match_ufs(location)
        if m is None:
            return None
        member_scheme = self.schemes.get(m.ufs_prefix) or scheme_of(m.ufs_prefix)
        if kind == DB_KIND and m.mount.is_union and m.mount.create_target != member_scheme:
            # new tables of this database are created on the create target
            target = m.mount.create_ufs
            return f"{target}/{m.rest}" if m.rest else target
        if member_scheme == "s3":
            return None  # already S3: engines read it directly
        key = f"{m.mount.name}/{m.rest}" if m.rest else m.mount.name
        return f"s3://{self.gateway_bucket}/{key}"

    # -- inbound --------------------------------------------------------------------------

    def gateway_key(self, location: str) -> str | None:
        """The object key if ``location`` is in the gateway bucket, else None."""
        parts = split_uri(location)
        if parts is None or parts[0] != "s3" or parts[1] != self.gateway_bucket:
            return None
        return "/".join(s for s in bucket_and_key(location.strip())[1].split("/") if s)

    def inbound(self, location: str, creating: bool = False, kind: str = "loc") -> str | None:
        """What the upstream HMS stores instead of ``location`` (None: unchanged).

        Raises :class:`RewriteError` for a gateway location outside every mount.
        """
        if kind == DB_NAME_KIND:
            return self.upstream_database(location)
        if not location:
            return None
        key = self.gateway_key(location)
        if key is not None:
            resolved = self.mounts.resolve_key(key) if key else None
            if resolved is None:
                raise RewriteError(
                    f"location {location} is in the gateway bucket but under no mount; refusing to store it"
                )
            mount, rest = resolved
            prefix = mount.create_ufs if creating else mount.ufs[0]
            return f"{prefix}/{rest}" if rest else prefix
        if not self.write_back:
            original = self.unflips.lookup(location)
            if original is not None:
                return original
        return None
