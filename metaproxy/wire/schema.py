"""Where the Hive Metastore API carries storage locations, derived from Hive 4's IDL.

The ``thrift_spec`` tuples of the generated Hive 4 bindings (the ``hive_metastore`` module)
describe every struct and every method's argument and result struct. From them this module
derives, once at import, a location schema per method: the paths from a request or reply down
to every ``StorageDescriptor.location``, ``Database.locationUri`` / ``managedLocationUri``,
``Catalog.locationUri``, ``PartitionSpec.rootPath`` and ``SkewedInfo.skewedColValueLocationMaps``
value, through any nesting of structs, lists and maps. Deriving it beats typing it by hand:
every method that carries a location — ``get_table_req``, ``get_partitions_by_names_req``,
``add_partitions_req``, ``alter_partitions_req``, ``create_table_req``, ``get_partitions_pspec``
and the rest — is covered, including ones added to the IDL later.

It also classifies methods as reads or writes (for the read-only default) and knows where a
method's result declares ``MetaException``, so the proxy can refuse a call in the client's own
terms.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from hive_metastore import ThriftHiveMetastore, ttypes
from thrift.protocol import TBinaryProtocol
from thrift.transport import TTransport

from metaproxy.wire.binary import DB_LOC, LIST, LOC, MAP, ROOT_LOC, SET, STRING, STRUCT, Child, StructSchema

LOCATION_FIELDS = {"location": LOC, "locationUri": DB_LOC, "managedLocationUri": DB_LOC, "rootPath": ROOT_LOC}
LOCATION_MAP_FIELDS = frozenset({"skewedColValueLocationMaps"})
#: database-name fields (rewritten only when a database-name mapping is configured)
DB_NAME = "dbname"
DB_NAME_FIELDS = frozenset({"dbName", "dbname", "db_name", "databaseName", "new_db_name"})
DB_NAME_FIELDS_OF = {
    ("Database", "name"),
    ("get_database_args", "name"),
    ("drop_database_args", "name"),
    ("CreateDatabaseRequest", "databaseName"),
}
DB_NAME_LISTS = {("get_all_databases_result", "success"), ("get_databases_result", "success")}


def _string_kind(owner: str, name: str, db_names: bool) -> str | None:
    """What a string field holds, if the proxy may rewrite it."""
    if name in LOCATION_FIELDS:
        return LOCATION_FIELDS[name]
    if db_names and (name in DB_NAME_FIELDS or (owner, name) in DB_NAME_FIELDS_OF):
        return DB_NAME
    return None


# Methods that change the metastore. Prefixes cover the IDL's naming; the explicit names cover
# the transaction, lock and maintenance calls. A method not in the IDL is classified by name too.
WRITE_PREFIXES = (
    "create_",
    "drop_",
    "alter_",
    "add_",
    "append_",
    "rename_",
    "exchange_",
    "update_",
    "delete_",
    "truncate_",
    "grant_",
    "revoke_",
    "mark_",
    "markPartitionForEvent",
    "abort_",
    "commit_",
    "open_txns",
    "allocate_",
    "repl_",
    "seed_",
    "put_file_metadata",
    "clear_file_metadata",
    "cache_file_metadata",
    "insert_",
    "fire_listener_event",
    "cm_recycle",
    "compact",
    "set_aggr_stats_for",
    "setPartitionColumnStatistics",
    "scheduled_query_maintenance",
    "scheduled_query_progress",
    "flushCache",
    "refresh_privileges",
    "lock",
    "unlock",
    "heartbeat",
    "replTableWriteIdState",
    "set_hadoop_jobid",
    "find_next_compact",
    "mark_",
    "submit_for_cleanup",
)
READ_EXCEPTIONS = frozenset({"set_ugi", "setMetaConf", "lock_materialization_rebuild"})
_DB_ATTRS = ("dbName", "dbname", "db_name", "databaseName", "destDb", "source_db", "dest_db")


def _spec(cls: Any) -> tuple[Any, ...]:
    return tuple(cls.thrift_spec)


def is_write(method: str) -> bool:
    """True if the method changes the metastore (refused unless writes are allowed)."""
    if method in READ_EXCEPTIONS:
        return False
    return method.startswith(WRITE_PREFIXES)


def _location_classes(db_names: bool = False) -> set[type]:
    """Every struct class from which a rewritable string is reachable (a fixpoint over the IDL)."""
    classes = [c for c in vars(ttypes).values() if isinstance(c, type) and getattr(c, "thrift_spec", None)]
    holders: set[type] = set()
    changed = True
    while changed:
        changed = False
        for cls in classes:
            if cls in holders:
                continue
            if any(_field_reaches(cls.__name__, f, holders, db_names) for f in _spec(cls) if f):
                holders.add(cls)
                changed = True
    return holders


def _field_reaches(owner: str, f: tuple[Any, ...], holders: set[type], db_names: bool) -> bool:
    _, ttype, name, args, _ = f
    if ttype == STRING:
        return _string_kind(owner, name, db_names) is not None
    if ttype == MAP and name in LOCATION_MAP_FIELDS:
        return True
    return _type_reaches(ttype, args, holders)


def _type_reaches(ttype: int, args: Any, holders: set[type]) -> bool:
    if ttype == STRUCT:
        return args[0] in holders
    if ttype in (LIST, SET):
        return _type_reaches(args[0], args[1], holders)
    if ttype == MAP:
        return _type_reaches(args[2], args[3], holders)
    return False


class _Builder:
    def __init__(self, db_names: bool = False) -> None:
        self.db_names = db_names
        self.holders = _location_classes(db_names)
        self.memo: dict[type, StructSchema] = {}

    def struct(self, cls: type) -> StructSchema | None:
        if cls not in self.holders:
            return None
        if cls in self.memo:
            return self.memo[cls]
        schema = StructSchema(cls.__name__)
        self.memo[cls] = schema  # before filling: the IDL has cycles (Table → … → Table)
        for f in _spec(cls):
            if not f:
                continue
            fid, ttype, name, args, _ = f
            child: Child | None
            if ttype == STRING:
                child = _string_kind(cls.__name__, name, self.db_names)
            elif ttype == MAP and name in LOCATION_MAP_FIELDS:
                child = ("map", LOC)
            else:
                child = self.child(ttype, args)
            if child is not None:
                schema[fid] = (ttype, child)
        return schema

    def child(self, ttype: int, args: Any) -> Child | None:
        if ttype == STRUCT:
            return self.struct(args[0])
        if ttype in (LIST, SET):
            sub = self.child(args[0], args[1])
            return ("list", sub) if sub is not None else None
        if ttype == MAP:
            sub = self.child(args[2], args[3])
            return ("map", sub) if sub is not None else None
        return None


@dataclass(frozen=True)
class MethodInfo:
    """What the proxy needs to know about one HMS method."""

    name: str
    request: StructSchema | None
    reply: StructSchema | None
    meta_exception_fid: int | None
    args_class: type | None
    write: bool


@functools.cache
def methods(db_names: bool = False) -> dict[str, MethodInfo]:
    """Every method of the Hive 4 IDL (schemas include database names if ``db_names``)."""
    b = _Builder(db_names)
    out: dict[str, MethodInfo] = {}
    for attr, args_cls in vars(ThriftHiveMetastore).items():
        if not attr.endswith("_args") or not isinstance(args_cls, type):
            continue
        name = attr[: -len("_args")]
        result_cls = getattr(ThriftHiveMetastore, f"{name}_result", None)
        meta_fid = None
        if result_cls is not None:
            for f in _spec(result_cls):
                if f and f[1] == STRUCT and f[3][0] is ttypes.MetaException:
                    meta_fid = f[0]
                    break
        out[name] = MethodInfo(
            name=name,
            request=_schema_of(b, args_cls),
            reply=_schema_of(b, result_cls) if result_cls is not None else None,
            meta_exception_fid=meta_fid,
            args_class=args_cls,
            write=is_write(name),
        )
    return out


def _schema_of(b: _Builder, cls: type) -> StructSchema | None:
    """Schema of an args/result wrapper struct (not itself a ttypes class)."""
    schema = StructSchema(cls.__name__)
    for f in _spec(cls):
        if not f:
            continue
        fid, ttype, name, args, _ = f
        child: Child | None
        if ttype == STRING:
            child = _string_kind(cls.__name__, name, b.db_names)
        elif b.db_names and (cls.__name__, name) in DB_NAME_LISTS:
            child = ("list", DB_NAME)
        else:
            child = b.child(ttype, args)
        if child is not None:
            schema[fid] = (ttype, child)
    return schema or None


def method(name: str, db_names: bool = False) -> MethodInfo | None:
    return methods(db_names).get(name)


_UNSAFE_NAME = re.compile(r"[\x00-\x1f]")


def database_names(info: MethodInfo, body: bytes) -> list[str]:
    """The database(s) a write call touches, read from its argument struct.

    Decodes the (small) request with the generated bindings, read-only: the bytes forwarded
    upstream are the original ones, never these objects.
    """
    if info.args_class is None:
        return []
    trans = TTransport.TMemoryBuffer(body)
    proto = TBinaryProtocol.TBinaryProtocolAccelerated(trans)
    args = info.args_class()
    args.read(proto)
    found: list[str] = []
    _collect_dbs(args, found, 0)
    return sorted({d.lower() for d in found if d and not _UNSAFE_NAME.search(d)})


def _collect_dbs(obj: Any, found: list[str], depth: int) -> None:
    if depth > 4 or obj is None:
        return
    if isinstance(obj, list | tuple | set):
        for o in list(obj)[:1000]:
            _collect_dbs(o, found, depth + 1)
        return
    if not hasattr(obj, "thrift_spec"):
        return
    if isinstance(obj, ttypes.Database | ttypes.CreateDatabaseRequest):
        name = getattr(obj, "name", None) or getattr(obj, "databaseName", None)
        if isinstance(name, str):
            found.append(name)
    for attr in _DB_ATTRS:
        v = getattr(obj, attr, None)
        if isinstance(v, str):
            found.append(v)
    for f in obj.thrift_spec:
        if f and f[1] in (STRUCT, LIST, SET):
            _collect_dbs(getattr(obj, f[2], None), found, depth + 1)


#: calls that name a lock by its id alone, no database (the request's field holding the id)
LOCK_ID_CALLS = frozenset({"unlock", "heartbeat", "check_lock"})


def _read(cls: Any, body: bytes) -> Any:
    obj = cls()
    obj.read(TBinaryProtocol.TBinaryProtocolAccelerated(TTransport.TMemoryBuffer(body)))
    return obj


def requested_lock_id(method: str, body: bytes) -> int | None:
    """The lock id an ``unlock``, ``heartbeat`` or ``check_lock`` request names, if any."""
    from hive_metastore import ThriftHiveMetastore

    if method not in LOCK_ID_CALLS:
        return None
    try:
        args = _read(getattr(ThriftHiveMetastore, f"{method}_args"), body)
    except Exception:
        return None
    req = getattr(args, "rqst", None) or getattr(args, "ids", None)
    lockid = getattr(req, "lockid", None)
    return int(lockid) if isinstance(lockid, int) else None


def granted_lock_id(body: bytes) -> int | None:
    """The lock id in the answer to ``lock`` (the reply's struct, after its message header)."""
    from hive_metastore import ThriftHiveMetastore

    try:
        result = _read(ThriftHiveMetastore.lock_result, body)
    except Exception:
        return None
    lockid = getattr(result.success, "lockid", None)
    return int(lockid) if isinstance(lockid, int) else None
