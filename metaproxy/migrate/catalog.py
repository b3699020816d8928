"""What the migration loop reads from and (only with write-back) writes to the on-prem HMS:
the units under a policy's path, and a unit's new location.

The loop only reads the HMS unless ``[migrate] write_back_to_hms`` is on; then it gives a
flipped unit's S3 location to the HMS itself, so clients that read the HMS directly follow
the data before its HDFS copy is removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from metaproxy.mounts import MountTable
from metaproxy.state.units import Unit

#: tables asked for at once (``get_table_objects_by_name_req``)
TABLE_BATCH = 100


@dataclass(frozen=True)
class UnitRef:
    """A unit as the HMS describes it."""

    db: str
    table: str
    part: str  #: ``k=v/k2=v2``, '' for an unpartitioned table
    location: str


def _under(key: str, want: str) -> bool:
    return key == want or key.startswith(want + "/")


def _tables(c: Any, dbname: str) -> Iterator[Any]:
    from hive_metastore import ttypes

    names = c.get_all_tables(dbname)
    for i in range(0, len(names), TABLE_BATCH):
        req = ttypes.GetTablesRequest(dbName=dbname, tblNames=names[i : i + TABLE_BATCH])
        yield from c.get_table_objects_by_name_req(req).tables


def discover(hms_uri: str, timeout_s: float, path: str, mounts: MountTable) -> list[UnitRef]:
    """Units whose location lies under the logical ``path`` (a mount path), read from the HMS."""
    from metaproxy.hms import connect

    want = path.strip("/")
    out: list[UnitRef] = []
    with connect(hms_uri, timeout_s) as c:
        for dbname in c.get_all_databases():
            for t in _tables(c, dbname):
                loc = t.sd.location if t.sd else ""
                key = mounts.gateway_key(loc) if loc else None
                if key is None:
                    continue
                if not t.partitionKeys:
                    if _under(key, want):
                        out.append(UnitRef(dbname, t.tableName, "", loc))
                    continue
                if not (_under(key, want) or want.startswith(key + "/")):
                    continue
                for p in c.get_partitions(dbname, t.tableName, -1):
                    pkey = mounts.gateway_key(p.sd.location)
                    if pkey is not None and _under(pkey, want):
                        name = "/".join(
                            f"{k.name}={v}" for k, v in zip(t.partitionKeys, p.values, strict=True)
                        )
                        out.append(UnitRef(dbname, t.tableName, name, p.sd.location))
    return out


def write_back(hms_uri: str, timeout_s: float, unit: Unit) -> None:
    """Give the on-prem HMS the unit's S3 location (idempotent: done already is fine)."""
    from hive_metastore import ttypes

    from metaproxy.hms import connect

    with connect(hms_uri, timeout_s) as c:
        if unit.part:
            obj = c.get_partition_by_name(unit.db, unit.tbl, unit.part)
        else:
            req = ttypes.GetTablesRequest(dbName=unit.db, tblNames=[unit.tbl])
            obj = c.get_table_objects_by_name_req(req).tables[0]
        now = obj.sd.location.rstrip("/")
        if now == unit.dest.rstrip("/"):
            return  # done before a crash
        if now != unit.source.rstrip("/"):
            raise RuntimeError(f"the HMS location changed to {obj.sd.location}; not writing back")
        obj.sd.location = unit.dest
        if unit.part:
            c.alter_partition(unit.db, unit.tbl, obj)
        else:
            c.alter_table(unit.db, unit.tbl, obj)
