"""metaproxy's configuration: one TOML file, parsed once into frozen, typed objects.

Every key is read here and nowhere else. A bad file fails with one :class:`ConfigError` that
names the file, the key and what was expected; nothing downstream ever sees a raw dict.
Secrets (S3 and gateway keys) are excluded from ``repr`` so they cannot leak into logs.

The file layout is documented in ``etc/metaproxy.toml``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

Profile = Literal["cloud", "onprem", "passthrough"]
PROFILES: tuple[str, ...] = ("cloud", "onprem", "passthrough")

DEFAULT_CONFIG_PATH = Path("etc/metaproxy.toml")
CONFIG_ENV = "METAPROXY_CONFIG"


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or has a bad key."""


@dataclass(frozen=True)
class ListenerConfig:
    """One Thrift listener of the metastore proxy and how it rewrites locations."""

    host: str = "127.0.0.1"
    port: int = 9183
    profile: Profile = "cloud"


@dataclass(frozen=True)
class MetastoreConfig:
    """The on-prem Hive Metastore(s) the proxy forwards to, and what it may write there."""

    uris: tuple[str, ...] = ("thrift://127.0.0.1:9083",)
    connect_timeout_s: float = 5.0
    call_timeout_s: float = 120.0
    allow_writes: bool = False
    writable_databases: tuple[str, ...] = ()
    database_prefix: str = ""
    database_map: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyConfig:
    """The metastore proxy's listeners and limits."""

    listeners: tuple[ListenerConfig, ...] = (ListenerConfig(),)
    max_message_bytes: int = 256 * 1024 * 1024
    admin_host: str = "127.0.0.1"
    admin_port: int = 9184
    mount_refresh_s: float = 2.0
    audit_log: str = ""


@dataclass(frozen=True)
class S3Config:
    """The real S3 (or S3-compatible store) that migrated data lives in."""

    endpoint: str = ""
    region: str = "us-east-1"
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    path_style: bool = True


@dataclass(frozen=True)
class HdfsConfig:
    """The on-prem HDFS, reached through WebHDFS."""

    namenode: str = "hdfs://127.0.0.1:8020"
    webhdfs: str = "http://127.0.0.1:9870"
    user: str = "hdfs"
    timeout_s: float = 60.0


@dataclass(frozen=True)
class TierConfig:
    """One cache tier: its capacity in bytes and, for disk, where it lives."""

    capacity: int
    path: str = ""


@dataclass(frozen=True)
class GatewayConfig:
    """The S3-compatible block-cache reader (the gateway)."""

    host: str = "127.0.0.1"
    port: int = 9185
    #: the address clients are given in rewritten locations' endpoint (Trino's s3.endpoint)
    endpoint: str = "http://127.0.0.1:9185"
    bucket: str = "metaproxy"
    region: str = "us-east-1"
    access_key: str = field(default="", repr=False)
    secret_key: str = field(default="", repr=False)
    block_size: int = 4 * 1024 * 1024
    memory: TierConfig = TierConfig(capacity=512 * 1024 * 1024)
    disk: TierConfig = TierConfig(capacity=8 * 1024 * 1024 * 1024, path="var/cache")
    pinned_max: int = 4 * 1024 * 1024 * 1024
    stale_after_s: float = 5.0
    #: a listing served within this long is re-listed in the background before it goes stale,
    #: so engines re-reading the same partitions do not wait a round trip per directory; 0: off
    refresh_listings_for_s: float = 60.0
    read_ahead_blocks: int = 4
    #: threads for UFS calls (stat, list, block reads); across a slow link each waits a round
    #: trip, so concurrency, not CPU, bounds an engine listing many partitions at once
    io_threads: int = 64
    admin_port: int = 9186
    #: mounts that accept PutObject/DeleteObject (written to the mount's create target); none by default
    writable_mounts: tuple[str, ...] = ()
    #: how often TTL'd paths are swept
    ttl_check_interval_s: float = 10.0


@dataclass(frozen=True)
class MountConfig:
    """A logical path bound to one UFS, or to a union of several."""

    path: str
    ufs: tuple[str, ...]
    read_priority: tuple[str, ...] = ()
    create_target: str = ""


@dataclass(frozen=True)
class MigrateConfig:
    """The migration loop."""

    target: str = "s3://metaproxy-migrated/"
    interval_s: float = 30.0
    grace_period_s: float = 3600.0
    part_size: int = 16 * 1024 * 1024
    parallelism: int = 4
    write_back_to_hms: bool = False


@dataclass(frozen=True)
class Config:
    """The whole configuration of a metaproxy deployment."""

    source: str
    state_path: str
    metastore: MetastoreConfig
    proxy: ProxyConfig
    gateway: GatewayConfig
    hdfs: HdfsConfig
    s3: S3Config
    migrate: MigrateConfig
    mounts: tuple[MountConfig, ...]
    log_level: str = "INFO"


# --------------------------------------------------------------------------------------------
# parsing

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "": 1.0}

T = TypeVar("T")


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


class _Section:
    """Reads typed keys out of one TOML table and remembers which ones were used."""

    def __init__(self, source: str, name: str, data: object) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        self.source, self.name, self.data = source, name, data
        self.used: set[str] = set()

    def _fail(self, key: str, expected: str, got: object) -> ConfigError:
        where = f"[{self.name}] {key}" if self.name else key
        return ConfigError(f"{self.source}: {where}: expected {expected}, got {got!r}")

    def get(self, key: str, kind: type[T], default: T) -> T:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return cast(T, float(value))
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._fail(key, f"a {kind.__name__}", value)
        return value

    def str_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._fail(key, "a list of strings", value)
        return tuple(value)

    def size(self, key: str, default: int) -> int:
        self.used.add(key)
        if key not in self.data:
            return default
        try:
            return parse_size(self.data[key])
        except ValueError as e:
            raise self._fail(key, str(e).removeprefix("expected "), self.data[key]) from None

    def duration(self, key: str, default: float) -> float:
        self.used.add(key)
        if key not in self.data:
            return default
        try:
            return parse_duration(self.data[key])
        except ValueError as e:
            raise self._fail(key, str(e).removeprefix("expected "), self.data[key]) from None

    def secret(self, key: str) -> str:
        """A secret: the value itself, or ``{key}_env`` naming an environment variable.

        An unset variable yields an empty secret: the service that needs it refuses to start
        and says which key is missing, while commands that do not need it keep working.
        """
        env_key = f"{key}_env"
        self.used.update((key, env_key))
        if env_key in self.data:
            if key in self.data:
                raise self._fail(key, f"either {key} or {env_key}, not both", "both")
            var = self.get(env_key, str, "")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise self._fail(env_key, "the name of an environment variable", var)
            return os.environ.get(var, "")
        return self.get(key, str, "")

    def sub(self, key: str) -> _Section:
        self.used.add(key)
        name = f"{self.name}.{key}" if self.name else key
        return _Section(self.source, name, self.data.get(key, {}))

    def check_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = f"[{self.name}]" if self.name else "top level"
            raise ConfigError(f"{self.source}: {where}: unknown key {unknown[0]!r}")


def _choice(section: _Section, key: str, choices: tuple[str, ...], default: str) -> str:
    value = section.get(key, str, default)
    if value not in choices:
        raise section._fail(key, "one of " + ", ".join(choices), value)
    return value


def _port(section: _Section, key: str, default: int) -> int:
    value = section.get(key, int, default)
    if not 0 <= value <= 65535:
        raise section._fail(key, "a port number 0-65535", value)
    return value


def _parse_mount(source: str, i: int, raw: object) -> MountConfig:
    s = _Section(source, f"mount.{i}", raw)
    path = s.get("path", str, "")
    if not path.startswith("/") or path.rstrip("/") == "" or ".." in path.split("/"):
        raise s._fail("path", "an absolute logical path such as /tpcds", path)
    ufs = s.str_list("ufs", ())
    if not ufs:
        raise s._fail("ufs", "one UFS URI or a list of them", s.data.get("ufs"))
    for u in ufs:
        if "://" not in u:
            raise s._fail("ufs", "URIs such as hdfs://namenode:8020/warehouse", u)
    schemes = tuple(u.split("://", 1)[0].lower() for u in ufs)
    read_priority = s.str_list("read_priority", schemes)
    for r in read_priority:
        if r not in schemes:
            raise s._fail("read_priority", f"schemes among {list(schemes)}", r)
    create_target = s.get("create_target", str, schemes[0])
    if create_target not in schemes:
        raise s._fail("create_target", f"one of {list(schemes)}", create_target)
    s.check_unknown()
    return MountConfig(path.rstrip("/"), ufs, read_priority, create_target)


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Turn a parsed TOML document into a :class:`Config`, or raise :class:`ConfigError`."""
    top = _Section(source, "", data)
    base = base_dir or Path.cwd()

    def resolve(p: str) -> str:
        return str((base / p).resolve()) if p and not os.path.isabs(p) else p

    st = top.sub("state")
    state_path = resolve(st.get("path", str, "var/metaproxy.db"))
    st.check_unknown()

    ms = top.sub("metastore")
    uris = ms.str_list("uris", MetastoreConfig.uris)
    for u in uris:
        if not u.startswith("thrift://") or ":" not in u[len("thrift://") :]:
            raise ms._fail("uris", "thrift://host:port URIs", u)
    writable = ms.str_list("writable_databases", ())
    for pattern in writable:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ms._fail("writable_databases", f"regular expressions ({e})", pattern) from None
    dbmap = ms.get("database_map", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dbmap.items()):
        raise ms._fail("database_map", "a table of client name = upstream name", dbmap)
    metastore = MetastoreConfig(
        uris=uris,
        connect_timeout_s=ms.duration("connect_timeout", 5.0),
        call_timeout_s=ms.duration("call_timeout", 120.0),
        allow_writes=ms.get("allow_writes", bool, False),
        writable_databases=writable,
        database_prefix=ms.get("database_prefix", str, ""),
        database_map=dict(dbmap),
    )
    ms.check_unknown()

    px = top.sub("proxy")
    listeners = []
    raw_listeners = px.get("listener", list, [{}])
    for i, raw in enumerate(raw_listeners):
        ls = _Section(source, f"proxy.listener.{i}", raw)
        listeners.append(
            ListenerConfig(
                host=ls.get("host", str, "127.0.0.1"),
                port=_port(ls, "port", 9183),
                profile=cast(Profile, _choice(ls, "profile", PROFILES, "cloud")),
            )
        )
        ls.check_unknown()
    proxy = ProxyConfig(
        listeners=tuple(listeners),
        max_message_bytes=px.size("max_message_size", ProxyConfig.max_message_bytes),
        admin_host=px.get("admin_host", str, "127.0.0.1"),
        admin_port=_port(px, "admin_port", 9184),
        mount_refresh_s=px.duration("mount_refresh", 2.0),
        audit_log=resolve(px.get("audit_log", str, "")),
    )
    px.check_unknown()

    gw = top.sub("gateway")
    mem = gw.sub("memory")
    memory = TierConfig(capacity=mem.size("capacity", GatewayConfig.memory.capacity))
    mem.check_unknown()
    dk = gw.sub("disk")
    disk = TierConfig(
        capacity=dk.size("capacity", GatewayConfig.disk.capacity),
        path=resolve(dk.get("path", str, GatewayConfig.disk.path)),
    )
    dk.check_unknown()
    block_size = gw.size("block_size", GatewayConfig.block_size)
    if not 64 * 1024 <= block_size <= 64 * 1024 * 1024:
        raise gw._fail("block_size", "a size between 64KiB and 64MiB", gw.data.get("block_size"))
    gw_port = _port(gw, "port", 9185)
    gw_host = gw.get("host", str, "127.0.0.1")
    bucket = gw.get("bucket", str, "metaproxy")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise gw._fail("bucket", "an S3 bucket name (3-63 lowercase letters, digits, '.', '-')", bucket)
    gateway = GatewayConfig(
        host=gw_host,
        port=gw_port,
        endpoint=gw.get("endpoint", str, f"http://{gw_host}:{gw_port}"),
        bucket=bucket,
        region=gw.get("region", str, "us-east-1"),
        access_key=gw.secret("access_key"),
        secret_key=gw.secret("secret_key"),
        block_size=block_size,
        memory=memory,
        disk=disk,
        # by default at most the tier that holds pins (the disk tier, else memory)
        pinned_max=gw.size(
            "pinned_max",
            min(GatewayConfig.pinned_max, disk.capacity if disk.capacity > 0 else memory.capacity),
        ),
        stale_after_s=gw.duration("stale_after", 5.0),
        refresh_listings_for_s=gw.duration("refresh_listings_for", GatewayConfig.refresh_listings_for_s),
        read_ahead_blocks=gw.get("read_ahead_blocks", int, GatewayConfig.read_ahead_blocks),
        io_threads=gw.get("io_threads", int, GatewayConfig.io_threads),
        admin_port=_port(gw, "admin_port", 9186),
        writable_mounts=tuple("/" + m.strip().strip("/") for m in gw.str_list("writable_mounts", ())),
        ttl_check_interval_s=gw.duration("ttl_check_interval", 10.0),
    )
    if not 1 <= gateway.io_threads <= 1024:
        raise gw._fail("io_threads", "a number of threads from 1 to 1024", gateway.io_threads)
    if gateway.read_ahead_blocks < 0:
        raise gw._fail("read_ahead_blocks", "a number of blocks >= 0", gateway.read_ahead_blocks)
    if gateway.pinned_max > disk.capacity and disk.capacity > 0:
        raise gw._fail(
            "pinned_max", f"at most the disk tier's capacity ({disk.capacity} bytes)", gateway.pinned_max
        )
    gw.check_unknown()

    hd = top.sub("hdfs")
    hdfs = HdfsConfig(
        namenode=hd.get("namenode", str, HdfsConfig.namenode),
        webhdfs=hd.get("webhdfs", str, HdfsConfig.webhdfs).rstrip("/"),
        user=hd.get("user", str, "hdfs"),
        timeout_s=hd.duration("timeout", 60.0),
    )
    hd.check_unknown()

    s3s = top.sub("s3")
    s3 = S3Config(
        endpoint=s3s.get("endpoint", str, ""),
        region=s3s.get("region", str, "us-east-1"),
        access_key=s3s.secret("access_key"),
        secret_key=s3s.secret("secret_key"),
        path_style=s3s.get("path_style", bool, True),
    )
    s3s.check_unknown()

    mg = top.sub("migrate")
    target = mg.get("target", str, MigrateConfig.target)
    if not target.startswith(("s3://", "s3a://")):
        raise mg._fail("target", "an s3:// URI prefix", target)
    migrate = MigrateConfig(
        target=target if target.endswith("/") else target + "/",
        interval_s=mg.duration("interval", 30.0),
        grace_period_s=mg.duration("grace_period", 3600.0),
        part_size=mg.size("part_size", MigrateConfig.part_size),
        parallelism=mg.get("parallelism", int, 4),
        write_back_to_hms=mg.get("write_back_to_hms", bool, False),
    )
    mg.check_unknown()

    raw_mounts = top.get("mount", list, [])
    mounts = tuple(_parse_mount(source, i, m) for i, m in enumerate(raw_mounts))
    seen: set[str] = set()
    for m in mounts:
        if m.path in seen:
            raise ConfigError(f"{source}: [[mount]] path {m.path!r} is declared twice")
        seen.add(m.path)

    log_level = _choice(top, "log_level", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
    top.check_unknown()
    return Config(
        source=source,
        state_path=state_path,
        metastore=metastore,
        proxy=proxy,
        gateway=gateway,
        hdfs=hdfs,
        s3=s3,
        migrate=migrate,
        mounts=mounts,
        log_level=log_level,
    )


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
