"""metaproxy's configuration: one TOML file, parsed once into frozen, typed objects.

Every key is read here and nowhere else, and each is declared once: a dataclass field's metadata
names its TOML key, its kind and any check, and its default is the dataclass default. One generic
reader turns a TOML table into a dataclass from those fields, so the parser cannot drift from the
dataclasses, and :func:`config_keys` lists every key it understands (a unit test holds
``etc/metaproxy.toml``, the documented example, to showing each of them).

A bad file fails with one :class:`ConfigError` that names the file, the key and what was expected;
nothing downstream ever sees a raw dict. Secrets (S3 and gateway keys) are excluded from ``repr`` so
they cannot leak into logs.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

Profile = Literal["cloud", "onprem", "passthrough"]
PROFILES: tuple[str, ...] = ("cloud", "onprem", "passthrough")
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")

DEFAULT_CONFIG_PATH = Path("etc/metaproxy.toml")
CONFIG_ENV = "METAPROXY_CONFIG"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or has a bad key."""


class _Invalid(ValueError):
    """A value refused by its kind or its field's check; ``got`` defaults to the value in the file."""

    def __init__(self, expected: str, got: object = MISSING) -> None:
        super().__init__(expected)
        self.expected, self.got = expected, got


# --------------------------------------------------------------------------------------------
# kinds: what a key's value may be in the file

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}


def parse_size(value: object) -> int:
    """``"4MiB"`` → 4194304; integers pass through. Raises ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 4MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
            return int(float(m.group(1)) * _SIZE_UNITS[unit])
    raise ValueError("expected a size such as 4MiB, 512MB or a number of bytes")


def parse_duration(value: object) -> float:
    """``"30s"``, ``"2h"``, ``"7d"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2) or ""]
    raise ValueError("expected a duration such as 500ms, 30s, 1m, 2h or 7d")


#: each kind and the TOML type of its values; size and duration also take strings ("4MiB", "30s")
_KINDS: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "table": dict,
    "port": int,
    "choice": str,
    "size": int | str,
    "duration": float | int | str,
    "str_list": list,  # or one string
    "secret": str,  # the value, or the environment variable its {key}_env names (see _secret)
    "path": str,  # resolved against the config's base directory, defaults included
    "section": dict,  # a sub-table, read into a dataclass
    "array": list,  # an array of tables, each read into a dataclass
}


def _convert(value: object, meta: Mapping[str, Any]) -> Any:
    """A value found in the file, as its field's kind; raises _Invalid."""
    kind = meta["kind"]
    if kind in ("size", "duration"):
        try:
            return parse_size(value) if kind == "size" else parse_duration(value)
        except ValueError as e:
            raise _Invalid(str(e).removeprefix("expected ")) from None
    if kind == "str_list":
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Invalid("a list of strings")
        return tuple(value)
    want = _KINDS[kind]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise _Invalid(f"a {want.__name__}")
    if kind == "port" and not 0 <= value <= 65535:
        raise _Invalid("a port number 0-65535")
    if kind == "choice" and value not in meta["choices"]:
        raise _Invalid("one of " + ", ".join(meta["choices"]))
    return value


#: a field's check: (its value, the fields read before it) → the value kept; raises _Invalid
Check = Callable[[Any, Mapping[str, Any]], Any]
#: a default computed when the key is absent: (the dataclass default, the fields read before it)
Derive = Callable[[Any, Mapping[str, Any]], Any]


def _key(
    key: str,
    kind: str,
    default: Any = MISSING,
    *,
    factory: Any = MISSING,
    check: Check | None = None,
    derive: Derive | None = None,
    choices: tuple[str, ...] = (),
    of: type | None = None,
    keys: tuple[str, ...] = (),
) -> Any:
    """A dataclass field read from ``key`` (dotted: in a sub-table) as ``kind``, and its default.

    A plain :func:`dataclasses.field` whose metadata the reader and :func:`config_keys` go by;
    without a default the key is required. ``check`` sees every value, defaults included. A section is read into the dataclass of its
    default, limited to ``keys`` if given; an array's tables into the dataclass ``of``. Secrets
    are kept out of ``repr``, so out of logs.
    """
    if kind not in _KINDS:
        raise TypeError(f"unknown config kind {kind!r}")
    if (kind == "array") != (of is not None):
        raise TypeError(f"{key}: 'of' is for arrays, which need it")
    meta = dict(key=key, kind=kind, check=check, derive=derive, choices=choices, of=of, keys=keys)
    return field(default=default, default_factory=factory, repr=kind != "secret", metadata=meta)


def _in_range(low: float, high: float, expected: str) -> Check:
    def check(n: int, _: Mapping[str, Any]) -> int:
        if not low <= n <= high:
            raise _Invalid(expected)
        return n

    return check


# --------------------------------------------------------------------------------------------
# the configuration, each field with its key

AUTH_KINDS: tuple[str, ...] = ("none", "kerberos")
SASL_QOPS: tuple[str, ...] = ("auth-conf", "auth-int", "auth")


def _qops(qops: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    if not qops:
        raise _Invalid("at least one of " + ", ".join(SASL_QOPS))
    for q in qops:
        if q not in SASL_QOPS:
            raise _Invalid("SASL qualities of protection among " + ", ".join(SASL_QOPS), q)
    return qops


def _principal(name: str, _: Mapping[str, Any]) -> str:
    if name and not re.fullmatch(r"[^@\s]+@[^@\s]+", name):
        raise _Invalid("a Kerberos principal such as metaproxy/_HOST@EXAMPLE.COM")
    return name


@dataclass(frozen=True)
class ListenerConfig:
    """One Thrift listener of the metastore proxy and how it rewrites locations."""

    host: str = _key("host", "str", "127.0.0.1")
    port: int = _key("port", "port", 9183)
    profile: Profile = _key("profile", "choice", "cloud", choices=PROFILES)
    #: how clients authenticate: "none" (a private network, as a plain HMS) or "kerberos" (SASL
    #: GSSAPI to the proxy's own principal, [metastore] kerberos_principal and keytab)
    auth: str = _key("auth", "choice", "none", choices=AUTH_KINDS)
    #: with kerberos: the client principals served (user@REALM); empty: every authenticated one
    principals: tuple[str, ...] = _key("principals", "str_list", ())
    #: with kerberos: the SASL layers offered to clients
    sasl_qop: tuple[str, ...] = _key("sasl_qop", "str_list", ("auth-conf", "auth-int", "auth"), check=_qops)
    #: serve TLS with [tls] cert_file and key_file (under SASL, when kerberos)
    tls: bool = _key("tls", "bool", False)


def _thrift_uris(uris: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    for u in uris:
        if not u.startswith("thrift://") or ":" not in u[len("thrift://") :]:
            raise _Invalid("thrift://host:port URIs", u)
    return uris


def _regexes(patterns: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as e:
            raise _Invalid(f"regular expressions ({e})", pattern) from None
    return patterns


def _name_map(table: dict[Any, Any], _: Mapping[str, Any]) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in table.items()):
        raise _Invalid("a table of client name = upstream name")
    return dict(table)


@dataclass(frozen=True)
class MetastoreConfig:
    """The on-prem Hive Metastore(s) the proxy forwards to, and what it may write there."""

    uris: tuple[str, ...] = _key("uris", "str_list", ("thrift://127.0.0.1:9083",), check=_thrift_uris)
    connect_timeout_s: float = _key("connect_timeout", "duration", 5.0)
    call_timeout_s: float = _key("call_timeout", "duration", 120.0)
    allow_writes: bool = _key("allow_writes", "bool", False)
    writable_databases: tuple[str, ...] = _key("writable_databases", "str_list", (), check=_regexes)
    database_prefix: str = _key("database_prefix", "str", "")
    database_map: Mapping[str, str] = _key("database_map", "table", factory=dict, check=_name_map)
    #: open connections kept to the HMS between client connections (0: one per client connection)
    pool_size: int = _key(
        "pool_size", "int", 32, check=_in_range(0, 4096, "a number of connections from 0 to 4096")
    )
    #: a pooled connection idle this long is closed
    pool_idle_timeout_s: float = _key("pool_idle_timeout", "duration", 300.0)
    #: a pooled connection idle this long is checked with a cheap call before it is used again
    pool_check_after_s: float = _key("pool_check_after", "duration", 30.0)
    #: metaproxy's own Kerberos principal (``_HOST``: this machine's name) and its keytab; set:
    #: the HMS is reached over SASL GSSAPI, and kerberos listeners accept clients as it
    kerberos_principal: str = _key("kerberos_principal", "str", "", check=_principal)
    keytab: str = _key("keytab", "path", "")
    #: the HMS's service principal (``_HOST``: the host of its URI), as its
    #: hive.metastore.kerberos.principal
    service_principal: str = _key("service_principal", "str", "hive/_HOST@EXAMPLE.COM", check=_principal)
    #: the SASL layers accepted from the HMS (it chooses by hadoop.rpc.protection), strongest first
    sasl_qop: tuple[str, ...] = _key("sasl_qop", "str_list", ("auth-conf", "auth-int", "auth"), check=_qops)


@dataclass(frozen=True)
class KerberosConfig:
    """How metaproxy keeps its own Kerberos tickets fresh."""

    #: how often the ticket's remaining life is looked at
    check_interval_s: float = _key("check_interval", "duration", 60.0)
    #: a new ticket is fetched from the keytab once less than this (or half its life) is left
    renew_before_s: float = _key("renew_before", "duration", 600.0)


@dataclass(frozen=True)
class TlsConfig:
    """Certificate and key the TLS endpoints serve, and the CA file clients verify with."""

    cert_file: str = _key("cert_file", "path", "")
    key_file: str = _key("key_file", "path", "")
    #: verifies the servers metaproxy connects to over TLS (WebHDFS over HTTPS); empty: the system's
    ca_file: str = _key("ca_file", "path", "")


@dataclass(frozen=True)
class ProxyConfig:
    """The metastore proxy's listeners and limits."""

    listeners: tuple[ListenerConfig, ...] = _key("listener", "array", (ListenerConfig(),), of=ListenerConfig)
    max_message_bytes: int = _key("max_message_size", "size", 256 * 1024 * 1024)
    admin_host: str = _key("admin_host", "str", "127.0.0.1")
    admin_port: int = _key("admin_port", "port", 9184)
    mount_refresh_s: float = _key("mount_refresh", "duration", 2.0)
    audit_log: str = _key("audit_log", "path", "")
    #: the admin endpoint (health, metrics) serves TLS with [tls] cert_file and key_file
    admin_tls: bool = _key("admin_tls", "bool", False)
    #: how often the metastore's notification log is read (keeps the metadata cache fresh and
    #: watches the HMS); 0: not followed (the HMS is still probed this often)
    events_interval_s: float = _key("events_interval", "duration", 0.5)
    #: how long one look at the HMS may wait before it counts as not answering
    probe_timeout_s: float = _key("probe_timeout", "duration", 3.0)
    #: answers of read-only calls kept, per listener; 0: none
    metadata_cache_bytes: int = _key("metadata_cache_size", "size", 256 * 1024 * 1024)
    #: when the notification log cannot vouch for cached answers, they are served while younger
    #: than this; 0: every call goes upstream
    metadata_stale_after_s: float = _key("metadata_stale_after", "duration", 0.0)
    #: while the HMS does not answer, cached answers are served (stale) for this long
    stale_if_error_s: float = _key("stale_if_error", "duration", 600.0)
    #: after an event dropped cached answers, ask again the calls engines made on that table
    #: (and, for a new partition, the ones that name it) before they ask
    metadata_warm_up: bool = _key("metadata_warm_up", "bool", True)


@dataclass(frozen=True)
class S3Config:
    """The real S3 (or S3-compatible store) that migrated data lives in."""

    endpoint: str = _key("endpoint", "str", "")
    region: str = _key("region", "str", "us-east-1")
    access_key: str = _key("access_key", "secret", "")
    secret_key: str = _key("secret_key", "secret", "")
    path_style: bool = _key("path_style", "bool", True)


@dataclass(frozen=True)
class HdfsConfig:
    """The on-prem HDFS, reached through WebHDFS."""

    namenode: str = _key("namenode", "str", "hdfs://127.0.0.1:8020")
    webhdfs: str = _key("webhdfs", "str", "http://127.0.0.1:9870", check=lambda url, _: url.rstrip("/"))
    user: str = _key("user", "str", "hdfs")
    timeout_s: float = _key("timeout", "duration", 60.0)
    #: "simple" (user.name=, as an unsecured cluster) or "kerberos" (SPNEGO as [metastore]
    #: kerberos_principal); an https:// webhdfs is verified with [tls] ca_file
    auth: str = _key("auth", "choice", "simple", choices=("simple", "kerberos"))


@dataclass(frozen=True)
class TierConfig:
    """One cache tier: its capacity in bytes and, for disk, where it lives."""

    capacity: int = _key("capacity", "size")
    path: str = _key("path", "path", "")


def _bucket_name(name: str, _: Mapping[str, Any]) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name):
        raise _Invalid("an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
    return name


_block_size = _in_range(64 * 1024, 64 * 1024 * 1024, "a size between 64KiB and 64MiB")
_read_ahead = _in_range(0, math.inf, "a number of blocks >= 0")
_io_threads = _in_range(1, 1024, "a number of threads from 1 to 1024")


def _pin_tier(default: int, tiers: Mapping[str, Any]) -> int:
    """By default pins may fill at most the tier that holds them (the disk tier, else memory)."""
    disk, memory = tiers["disk"].capacity, tiers["memory"].capacity
    return min(default, disk if disk > 0 else memory)


def _pins_fit(pinned_max: int, tiers: Mapping[str, Any]) -> int:
    disk = tiers["disk"].capacity
    if pinned_max > disk and disk > 0:
        raise _Invalid(f"at most the disk tier's capacity ({disk} bytes)", pinned_max)
    return pinned_max


@dataclass(frozen=True)
class GatewayConfig:
    """The S3-compatible block-cache reader (the gateway)."""

    host: str = _key("host", "str", "127.0.0.1")
    port: int = _key("port", "port", 9185)
    #: the address clients are given in rewritten locations' endpoint (Trino's s3.endpoint);
    #: without the key http://{host}:{port}, which the default here is for the default host and port
    endpoint: str = _key(
        "endpoint", "str", "http://127.0.0.1:9185", derive=lambda _, gw: f"http://{gw['host']}:{gw['port']}"
    )
    bucket: str = _key("bucket", "str", "metaproxy", check=_bucket_name)
    region: str = _key("region", "str", "us-east-1")
    access_key: str = _key("access_key", "secret", "")
    secret_key: str = _key("secret_key", "secret", "")
    block_size: int = _key("block_size", "size", 4 * 1024 * 1024, check=_block_size)
    memory: TierConfig = _key("memory", "section", TierConfig(capacity=512 * 1024 * 1024), keys=("capacity",))
    disk: TierConfig = _key("disk", "section", TierConfig(capacity=8 * 1024 * 1024 * 1024, path="var/cache"))
    pinned_max: int = _key("pinned_max", "size", 4 * 1024 * 1024 * 1024, derive=_pin_tier, check=_pins_fit)
    stale_after_s: float = _key("stale_after", "duration", 5.0)
    #: a listing served within this long is re-listed in the background before it goes stale,
    #: so engines re-reading the same partitions do not wait a round trip per directory; 0: off
    refresh_listings_for_s: float = _key("refresh_listings_for", "duration", 60.0)
    read_ahead_blocks: int = _key("read_ahead_blocks", "int", 4, check=_read_ahead)
    #: threads for UFS calls (stat, list, block reads); across a slow link each waits a round
    #: trip, so concurrency, not CPU, bounds an engine listing many partitions at once
    io_threads: int = _key("io_threads", "int", 64, check=_io_threads)
    admin_port: int = _key("admin_port", "port", 9186)
    #: the S3 endpoint and the admin endpoint serve TLS with [tls] cert_file and key_file
    tls: bool = _key("tls", "bool", False)
    admin_tls: bool = _key("admin_tls", "bool", False)
    #: mounts that accept PutObject/DeleteObject (written to the mount's create target); none by default
    writable_mounts: tuple[str, ...] = _key(
        "writable_mounts", "str_list", (), check=lambda ms, _: tuple("/" + m.strip().strip("/") for m in ms)
    )
    #: how often TTL'd paths are swept
    ttl_check_interval_s: float = _key("ttl_check_interval", "duration", 10.0)
    #: while a UFS does not answer, cached listings, statuses and blocks are served this long
    stale_if_error_s: float = _key("stale_if_error", "duration", 600.0)
    #: how often each UFS is probed, and how long a probe may wait before it counts as down
    probe_interval_s: float = _key("probe_interval", "duration", 1.0)
    probe_timeout_s: float = _key("probe_timeout", "duration", 3.0)
    #: how often the metastore's notification log is read, so an on-prem change reaches the
    #: listings it touches at once; 0: not followed (listings age out after stale_after)
    events_interval_s: float = _key("events_interval", "duration", 0.5)


def _schemes(_: object, mount: Mapping[str, Any]) -> tuple[str, ...]:
    """The schemes of the mount's UFS URIs, in order: its read priority unless configured."""
    return tuple(u.split("://", 1)[0].lower() for u in mount["ufs"])


def _logical_path(path: str, _: Mapping[str, Any]) -> str:
    if not path.startswith("/") or path.rstrip("/") == "" or ".." in path.split("/"):
        raise _Invalid("an absolute logical path such as /tpcds")
    return path.rstrip("/")


def _ufs_uris(ufs: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    if not ufs:
        raise _Invalid("one UFS URI or a list of them")
    for u in ufs:
        if "://" not in u:
            raise _Invalid("URIs such as hdfs://namenode:8020/warehouse", u)
    return ufs


def _known_schemes(chosen: str | tuple[str, ...], mount: Mapping[str, Any]) -> str | tuple[str, ...]:
    schemes = _schemes(None, mount)
    for scheme in (chosen,) if isinstance(chosen, str) else chosen:
        if scheme not in schemes:
            raise _Invalid(f"schemes among {list(schemes)}", scheme)
    return chosen


@dataclass(frozen=True)
class MountConfig:
    """A logical path bound to one UFS, or to a union of several."""

    path: str = _key("path", "str", check=_logical_path)
    ufs: tuple[str, ...] = _key("ufs", "str_list", check=_ufs_uris)
    read_priority: tuple[str, ...] = _key(
        "read_priority", "str_list", (), derive=_schemes, check=_known_schemes
    )
    #: without the key, the scheme of the first UFS
    create_target: str = _key(
        "create_target", "str", "", derive=lambda _, m: _schemes(_, m)[0], check=_known_schemes
    )


def _s3_prefix(target: str, _: Mapping[str, Any]) -> str:
    if not target.startswith(("s3://", "s3a://")):
        raise _Invalid("an s3:// URI prefix")
    return target if target.endswith("/") else target + "/"


COPIERS: tuple[str, ...] = ("builtin", "distcp")
DISTCP_FRAMEWORKS: tuple[str, ...] = ("local", "yarn")
#: DistCp arguments the runner sets itself: how files map to the target, and what is replaced
_DISTCP_OWN = ("-f", "-update", "-overwrite", "-append", "-delete", "-diff", "-rdiff", "-direct", "-atomic")
#: configuration keys that hold secrets: never on a command line (the runner passes them in a
#: private file), so never in ``ps`` or a log
_DISTCP_SECRET = re.compile(r"(secret|password|access\.key|session\.token)", re.IGNORECASE)


def _distcp_command(classpath: str, before: Mapping[str, Any]) -> str:
    if before["copier"] == "distcp" and bool(classpath) == bool(before["distcp_hadoop"]):
        raise _Invalid(
            "exactly one of distcp_hadoop (a hadoop command) and distcp_classpath (a folder of "
            'Hadoop jars) with copier = "distcp"'
        )
    return classpath


def _distcp_options(options: tuple[str, ...], _: Mapping[str, Any]) -> tuple[str, ...]:
    for i, opt in enumerate(options):
        if opt in _DISTCP_OWN:
            raise _Invalid(
                "DistCp options other than " + ", ".join(_DISTCP_OWN) + " (the copier sets those)", opt
            )
        if opt.startswith("-D") and opt != "-D":
            prop = opt[2:]
        elif i > 0 and options[i - 1] == "-D":
            prop = opt
        else:
            continue
        if "=" not in prop:
            raise _Invalid("-Dkey=value properties", opt)
        if _DISTCP_SECRET.search(prop.split("=", 1)[0]):
            # the value is not shown: it is a secret
            key = prop.split("=", 1)[0]
            raise _Invalid(
                "no secrets on the command line (the job gets [s3]'s keys in a private file)", f"{key}=…"
            )
    if options and options[-1] == "-D":
        raise _Invalid("a key=value after -D")
    return options


@dataclass(frozen=True)
class MigrateConfig:
    """The migration loop."""

    target: str = _key("target", "str", "s3://metaproxy-migrated/", check=_s3_prefix)
    interval_s: float = _key("interval", "duration", 30.0)
    #: how long a loop's claim on a unit holds without being renewed: another loop (sharing a
    #: PostgreSQL state) takes over a unit whose loop died after this long
    lease_s: float = _key("lease", "duration", 60.0, check=_in_range(1, 86400, "between 1s and 1d"))
    grace_period_s: float = _key("grace_period", "duration", 3600.0)
    part_size: int = _key("part_size", "size", 16 * 1024 * 1024)
    parallelism: int = _key("parallelism", "int", 4)
    write_back_to_hms: bool = _key("write_back_to_hms", "bool", False)
    #: what copies a unit's files: "builtin" (metaproxy's own copier, WebHDFS → S3) or "distcp"
    #: (a Hadoop DistCp job, for units of at least distcp_threshold bytes; smaller ones builtin)
    copier: str = _key("copier", "choice", "builtin", choices=COPIERS)
    #: with copier = "distcp": units of at least this many bytes go through DistCp; 0: every unit
    #: (4 GiB: about where DistCp on a small YARN cluster overtakes, see docs/benchmarks.md)
    distcp_threshold: int = _key("distcp_threshold", "size", 4 * 1024 * 1024 * 1024)
    #: the ``hadoop`` command of an edge node (``hadoop distcp …``, its own HADOOP_CONF_DIR)...
    distcp_hadoop: str = _key("distcp_hadoop", "str", "")
    #: ...or a folder of Hadoop jars (DistCp, MapReduce client, HDFS client, hadoop-aws, the AWS
    #: SDK bundle) run with distcp_java; one of the two is needed with copier = "distcp"
    distcp_classpath: str = _key("distcp_classpath", "path", "", check=_distcp_command)
    #: the java command for distcp_classpath; empty: $JAVA_HOME/bin/java, else java on the PATH
    distcp_java: str = _key("distcp_java", "str", "")
    #: where the job runs: "local" (MapReduce's local job runner, inside the one JVM) or "yarn"
    #: (the cluster of HADOOP_CONF_DIR)
    distcp_framework: str = _key("distcp_framework", "choice", "local", choices=DISTCP_FRAMEWORKS)
    #: more DistCp arguments, such as ["-m", "20", "-bandwidth", "100", "-Dmapreduce.job.queuename=etl"]
    distcp_options: tuple[str, ...] = _key("distcp_options", "str_list", (), check=_distcp_options)
    #: a job still running after this long is killed, and the unit fails (retried later)
    distcp_timeout_s: float = _key(
        "distcp_timeout", "duration", 7200.0, check=_in_range(1, math.inf, "a duration of at least 1s")
    )
    #: one log file per DistCp job (the error of a failed one quotes its tail)
    distcp_log_dir: str = _key("distcp_log_dir", "path", "var/log/distcp")


def _distinct_paths(mounts: tuple[MountConfig, ...], _: Mapping[str, Any]) -> tuple[MountConfig, ...]:
    seen: set[str] = set()
    for m in mounts:
        if m.path in seen:
            raise _Invalid("each mount path declared once", m.path)
        seen.add(m.path)
    return mounts


def _node_name(name: str, _: Mapping[str, Any]) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise _Invalid("a node name of letters, digits, '_', '.', '-'")
    return name


@dataclass(frozen=True)
class NodeConfig:
    """One gateway node of a cluster: where it listens and where its disk tier lives."""

    name: str = _key("name", "str", check=_node_name)
    port: int = _key("port", "port")
    admin_port: int = _key("admin_port", "port")
    host: str = _key("host", "str", "127.0.0.1")
    #: its disk tier's directory; without the key, ``[gateway.disk] path`` + ``-<name>``
    disk_path: str = _key("disk_path", "path", "")


def _distinct_nodes(nodes: tuple[NodeConfig, ...], _: Mapping[str, Any]) -> tuple[NodeConfig, ...]:
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise _Invalid("each node name declared once", n.name)
        seen.add(n.name)
    return nodes


@dataclass(frozen=True)
class ClusterConfig:
    """Gateway nodes behind a load balancer that hashes each object to one node (see
    docs/cluster.md). The nodes are listed here, not discovered."""

    #: the S3 endpoint clients use: the load balancer in front of the nodes
    endpoint: str = _key("endpoint", "str", "", check=lambda url, _: url.rstrip("/"))
    #: the balancer's statistics page in CSV (HAProxy's ``stats uri`` + ``;csv``), for the report
    balancer_stats: str = _key("balancer_stats", "str", "")
    nodes: tuple[NodeConfig, ...] = _key("node", "array", (), of=NodeConfig, check=_distinct_nodes)


def _state_url(url: str, _: Mapping[str, Any]) -> str:
    if not url:
        return url
    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise _Invalid("a postgresql://user@host:port/database URL")
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as e:
        raise _Invalid(f"a postgresql://user@host:port/database URL ({e})", "a malformed URL") from None
    if parts.password is not None:
        # never echo the value: it holds a password
        raise _Invalid(
            "a URL without a password (libpq takes it from ~/.pgpass or $PGPASSFILE)", "a URL with a password"
        )
    if not parts.path.strip("/"):
        raise _Invalid("a URL that names the database (…/metaproxy)")
    return url


@dataclass(frozen=True)
class Config:
    """The whole configuration of a metaproxy deployment."""

    source: str
    state_path: str = _key("state.path", "path", "var/metaproxy.db")
    #: a PostgreSQL database several machines share (``postgresql://user@host:port/db``); when
    #: set, ``state.path`` is not used
    state_url: str = _key("state.url", "str", "", check=_state_url)
    metastore: MetastoreConfig = _key("metastore", "section", factory=MetastoreConfig)
    proxy: ProxyConfig = _key("proxy", "section", factory=ProxyConfig)
    gateway: GatewayConfig = _key("gateway", "section", factory=GatewayConfig)
    hdfs: HdfsConfig = _key("hdfs", "section", factory=HdfsConfig)
    s3: S3Config = _key("s3", "section", factory=S3Config)
    migrate: MigrateConfig = _key("migrate", "section", factory=MigrateConfig)
    cluster: ClusterConfig = _key("cluster", "section", factory=ClusterConfig)
    kerberos: KerberosConfig = _key("kerberos", "section", factory=KerberosConfig)
    tls: TlsConfig = _key("tls", "section", factory=TlsConfig)
    mounts: tuple[MountConfig, ...] = _key("mount", "array", (), of=MountConfig, check=_distinct_paths)
    log_level: str = _key("log_level", "choice", "INFO", choices=LOG_LEVELS)

    @property
    def state(self) -> str:
        """Where metaproxy's state lives: ``[state] url`` (PostgreSQL) if set, else the SQLite
        file ``[state] path`` (what :func:`metaproxy.state.open_state` takes)."""
        return self.state_url or self.state_path


# --------------------------------------------------------------------------------------------
# reading: one generic reader, driven by the fields above


class _Section:
    """One TOML table being read: remembers which keys were used, so the others are rejected."""

    def __init__(self, source: str, name: str, data: object, base: Path) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.source, self.name, self.data, self.base = source, name, data, base
        self.used: set[str] = set()
        self.subs: dict[str, _Section] = {}

    def fail(self, key: str, expected: str, got: object) -> ConfigError:
        where = f"[{self.name}] {key}" if self.name else key
        shown = "nothing" if got is MISSING else repr(got)
        return ConfigError(f"{self.source}: {where}: expected {expected}, got {shown}")

    def take(self, key: str) -> object:
        """The key's value, or MISSING."""
        self.used.add(key)
        return self.data.get(key, MISSING)

    def child(self, key: str, data: object) -> _Section:
        return _Section(self.source, f"{self.name}.{key}" if self.name else key, data, self.base)

    def sub(self, key: str) -> _Section:
        """The sub-table ``key`` (empty when absent); its keys are checked with this table's."""
        if key not in self.subs:
            self.used.add(key)
            self.subs[key] = self.child(key, self.data.get(key, {}))
        return self.subs[key]

    def check_unknown(self) -> None:
        """Rejects keys nothing read, here and in the sub-tables read through this table."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f"[{self.name}]" if self.name else "top level"
            raise ConfigError(f"{self.source}: {where}: unknown key {unknown[0]!r}")
        for sub in self.subs.values():
            sub.check_unknown()


def _bound_fields(cls: type, keys: tuple[str, ...] = ()) -> Iterator[Field[Any]]:
    """The fields of ``cls`` read from the file (all of them, or those whose key is in ``keys``)."""
    for f in fields(cls):
        if "key" in f.metadata and (not keys or f.metadata["key"] in keys):
            yield f


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _read(s: _Section, cls: type, base: object = None, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of ``cls`` read from ``s``; absent keys take their default from ``base`` (an
    instance of ``cls``) if given, else from the dataclass."""
    values: dict[str, Any] = {}
    for f in _bound_fields(cls, keys):
        values[f.name] = _read_field(s, f, _default(f) if base is None else getattr(base, f.name), values)
    s.check_unknown()
    return values


def _read_field(s: _Section, f: Field[Any], default: Any, before: Mapping[str, Any]) -> Any:
    """One field: its value in the file or its default, then its check."""
    meta = f.metadata
    *tables, key = meta["key"].split(".")
    for table in tables:
        s = s.sub(table)
    kind, of = meta["kind"], meta["of"]
    if kind == "section":
        return replace(default, **_read(s.sub(key), type(default), default, meta["keys"]))
    raw = _secret(s, key) if kind == "secret" else s.take(key)
    try:
        if raw is MISSING:
            value = meta["derive"](default, before) if meta["derive"] else default
            if value is MISSING:
                raise _Invalid("a value")
        elif kind == "array":
            items = _convert(raw, meta)
            value = tuple(of(**_read(s.child(f"{key}.{i}", item), of)) for i, item in enumerate(items))
        else:
            value = _convert(raw, meta)
        if kind == "path" and value and not os.path.isabs(value):
            # defaults too: var/… is the deployment's var/, wherever metaproxy was started
            value = str((s.base / value).resolve())
        return meta["check"](value, before) if meta["check"] else value
    except _Invalid as e:
        raise s.fail(key, e.expected, raw if e.got is MISSING else e.got) from None


def _secret(s: _Section, key: str) -> object:
    """A secret: the value itself, or ``{key}_env`` naming an environment variable.

    An unset variable yields an empty secret: the service that needs it refuses to start
    and says which key is missing, while commands that do not need it keep working.
    """
    env_key = f"{key}_env"
    value, var = s.take(key), s.take(env_key)
    if var is MISSING:
        return value
    if value is not MISSING:
        raise s.fail(key, f"either {key} or {env_key}, not both", "both")
    if not isinstance(var, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
        raise s.fail(env_key, "the name of an environment variable", var)
    return os.environ.get(var, "")


def _keys(cls: type, prefix: str, keys: tuple[str, ...] = ()) -> Iterator[str]:
    for f in _bound_fields(cls, keys):
        meta = f.metadata
        name = prefix + meta["key"]
        if meta["kind"] in ("section", "array"):
            yield from _keys(meta["of"] or type(_default(f)), name + ".", meta["keys"])
        else:
            yield name
            if meta["kind"] == "secret":
                yield name + "_env"


def config_keys() -> tuple[str, ...]:
    """Every key the parser understands, as ``section.key``: ``log_level``, ``state.path``,
    ``gateway.memory.capacity``, ``proxy.listener.port``, ``s3.secret_key`` and ``s3.secret_key_env``…

    Read from the same field metadata as the parser, so it cannot miss one.
    """
    return tuple(_keys(Config, ""))


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Turn a parsed TOML document into a :class:`Config`, or raise :class:`ConfigError`."""
    top = _Section(source, "", data, base_dir or Path.cwd())
    return Config(source=source, **_read(top, Config))


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and parse the config file (``$METAPROXY_CONFIG`` or ``etc/metaproxy.toml`` by default).

    Relative paths inside the file are resolved against the file's directory's parent when the
    file lives in an ``etc/`` folder (so ``var/…`` means the deployment's ``var/``), else against
    the file's own directory.
    """
    p = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config file: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    parent = p.resolve().parent
    base = parent.parent if parent.name == "etc" else parent
    return parse_config(data, str(p), base)
