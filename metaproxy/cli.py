"""The ``metaproxy`` command line: services, mounts, policies, the cache and reports.

Each sub-command group lives next to the code it drives and is registered here; this module
only wires them together and turns :class:`~metaproxy.config.ConfigError` into a clean exit.
Installed packages add command groups through the ``metaproxy.cli`` entry points (the
development package adds ``stack`` and ``sample``).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any

import click

from metaproxy import __version__
from metaproxy.config import ConfigError
from metaproxy.console import emit_json, json_option, show, table


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="metaproxy")
@click.option(
    "--config",
    "-c",
    "config_path",
    envvar="METAPROXY_CONFIG",
    default="etc/metaproxy.toml",
    show_default=True,
    help="The metaproxy TOML config file.",
)
@click.pass_context
def cli(ctx: click.Context, config_path: str) -> None:
    """metaproxy: query an on-prem Hive/HDFS data lake from the cloud, then move it to S3."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


@cli.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Parse the config file and print what it resolves to (secrets hidden)."""
    from metaproxy.config import load_config

    cfg = load_config(ctx.obj["config_path"])
    click.echo(repr(cfg))


@cli.group()
def mount() -> None:
    """Manage mounts: logical paths bound to a UFS or a union of UFSs."""


def _open_state_and_config(ctx: click.Context) -> tuple[Any, Any]:
    """The config and the state DB (closed when the command ends)."""
    from metaproxy.config import load_config
    from metaproxy.state import open_state

    cfg = load_config(ctx.obj["config_path"])
    return cfg, ctx.with_resource(open_state(cfg.state))


@mount.command("add")
@click.argument("path")
@click.argument("ufs", nargs=-1, required=True)
@click.option("--read-priority", default="", help="Union mounts: member schemes in read order, e.g. s3,hdfs.")
@click.option("--create-target", default="", help="Union mounts: the scheme new tables and partitions go to.")
@click.pass_context
def mount_add(
    ctx: click.Context, path: str, ufs: tuple[str, ...], read_priority: str, create_target: str
) -> None:
    """Mount UFS (one URI, or several for a union mount) at PATH.

    \b
    metaproxy mount add /tpcds hdfs://namenode:8020/warehouse/tpcds
    metaproxy mount add /sales hdfs://nn:8020/sales s3://lake/sales --read-priority s3,hdfs --create-target s3
    """
    from metaproxy.mounts import MountError, add_mount, make_mount

    cfg, db = _open_state_and_config(ctx)
    prio = tuple(p.strip() for p in read_priority.split(",") if p.strip())
    try:
        m = make_mount(path, ufs, prio, create_target)
        add_mount(cfg, db, m)
    except MountError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"mounted {m.path} -> {', '.join(m.ufs)}")


@mount.command("list")
@json_option
@click.pass_context
def mount_list(ctx: click.Context, as_json: bool) -> None:
    """List mounts (from the config file and the state DB)."""
    from metaproxy.mounts import load_mount_table

    cfg, db = _open_state_and_config(ctx)
    mounts = list(load_mount_table(cfg, db))
    if as_json:
        emit_json(
            [
                {
                    "path": m.path,
                    "ufs": list(m.ufs),
                    "read_priority": list(m.read_priority),
                    "create_target": m.create_target,
                    "declared_in": cfg.source if m.source == "config" else "state",
                }
                for m in mounts
            ]
        )
        return
    t = table("path", "ufs", "read priority", "create target", "declared in")
    for m in mounts:
        t.add_row(
            m.path,
            "\n".join(m.ufs),
            ",".join(m.read_priority),
            m.create_target,
            cfg.source if m.source == "config" else "state DB",
        )
    show(t)


@mount.command("remove")
@click.argument("path")
@click.pass_context
def mount_remove(ctx: click.Context, path: str) -> None:
    """Remove the mount at PATH (running proxies and gateways drop it within seconds)."""
    from metaproxy.mounts import MountError, remove_mount

    cfg, db = _open_state_and_config(ctx)
    try:
        m = remove_mount(cfg, db, path)
    except MountError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"unmounted {m.path}")


@cli.group("state")
def state_group() -> None:
    """The state database: mounts, policies, flips, pins and the migration journal."""


@state_group.command("show")
@json_option
@click.pass_context
def state_show(ctx: click.Context, as_json: bool) -> None:
    """Where the state is, its schema version, and the rows of each table."""
    from metaproxy.state import schema

    _, db = _open_state_and_config(ctx)
    counts = {
        t.name: int(db.query(f"SELECT count(*) AS n FROM {t.name}")[0]["n"])
        for t in schema.metadata.sorted_tables
    }
    if as_json:
        emit_json({"where": db.where, "backend": db.dialect, "schema_version": db.version, "rows": counts})
        return
    click.echo(f"{db.where} ({db.dialect}, schema {db.version})")
    t = table("table", "rows")
    for name, n in counts.items():
        t.add_row(name, str(n))
    show(t)


@state_group.command("copy")
@click.argument("target")
@click.pass_context
def state_copy(ctx: click.Context, target: str) -> None:
    """Copy the whole state into TARGET (a postgresql:// URL or a SQLite file path), which must
    be empty; then point [state] at it. Stop the migration loops first.

    \b
    metaproxy state copy postgresql://metaproxy@pg.internal:5432/metaproxy
    """
    from metaproxy.state import open_state
    from metaproxy.state.transfer import copy_state

    _, db = _open_state_and_config(ctx)
    dest = ctx.with_resource(open_state(target))
    copied = copy_state(db, dest)
    click.echo(f"copied {sum(copied.values())} rows from {db.where} to {dest.where}")


@cli.command("serve")
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the metastore proxy (every configured listener) and its admin endpoint."""
    import logging
    import signal
    import threading

    from metaproxy.admin import AdminServer
    from metaproxy.config import load_config
    from metaproxy.thrift_server import MetastoreProxy

    cfg = load_config(ctx.obj["config_path"])
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if cfg.proxy.audit_log:
        handler = logging.FileHandler(cfg.proxy.audit_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        audit = logging.getLogger("metaproxy.audit")
        audit.addHandler(handler)
        audit.propagate = False
    proxy = MetastoreProxy(cfg)
    proxy.start()

    tls = proxy.state.security.server_tls() if cfg.proxy.admin_tls else None
    admin = AdminServer(cfg.proxy.admin_host, cfg.proxy.admin_port, proxy.health, tls=tls)
    admin.start()
    scheme = "https" if tls else "http"
    click.echo(f"admin endpoint on {scheme}://{cfg.proxy.admin_host}:{admin.port}/health", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    proxy.stop()
    admin.stop()


@cli.command("gateway")
@click.option(
    "--node",
    default="",
    help="Run as this node of [cluster]: its ports and disk tier from its entry (docs/cluster.md).",
)
@click.pass_context
def gateway_cmd(ctx: click.Context, node: str) -> None:
    """Run the cache gateway (the S3-compatible block-cache reader over the mounts)."""
    import logging
    import signal
    import threading

    from metaproxy.cache.server import GatewayServer
    from metaproxy.config import load_config

    cfg = load_config(ctx.obj["config_path"])
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if node:
        from metaproxy.cache.cluster import ClusterError, node_config

        try:
            cfg = node_config(cfg, node)
        except ClusterError as e:
            raise click.ClickException(str(e)) from None
    try:
        server = GatewayServer(cfg, node).start()
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(
        f"gateway listening on {cfg.gateway.host}:{server.port} (bucket {cfg.gateway.bucket})", err=True
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()


@cli.command("report")
@click.option("--url", default="", help="The gateway's admin URL (default: from the config file).")
@click.option(
    "--proxy-url", default="", help="The metastore proxy's admin URL (default: from the config file)."
)
@json_option
@click.pass_context
def report(ctx: click.Context, url: str, proxy_url: str, as_json: bool) -> None:
    """What the cache holds and serves, and whether the on-prem side answers: tiers, hit ratio,
    bytes per UFS and per mount; the metastore, its notification log and the metadata cache;
    upstreams not answering, since when, and how stale the answers served meanwhile are."""
    import requests

    no_proxy = ""
    cfg = None
    #: the CA admin endpoints over TLS are verified with (the config's [tls] ca_file)
    verify: str | bool = True
    if not url or not proxy_url:
        from metaproxy.config import load_config

        try:
            cfg = load_config(ctx.obj["config_path"])
        except ConfigError as e:
            if not url:
                raise
            no_proxy = f"no --proxy-url, and no config file to read it from ({e})"
        else:
            px_scheme = "https" if cfg.proxy.admin_tls else "http"
            proxy_url = proxy_url or f"{px_scheme}://{cfg.proxy.admin_host}:{cfg.proxy.admin_port}"
            verify = cfg.tls.ca_file or True
            if cfg.cluster.nodes and not url:
                rep = _cluster_report(cfg)
            else:
                gw_scheme = "https" if cfg.gateway.admin_tls else "http"
                url = url or f"{gw_scheme}://{cfg.proxy.admin_host}:{cfg.gateway.admin_port}"
    if url:
        try:
            r = requests.get(f"{url.rstrip('/')}/report", timeout=10, verify=verify)
            r.raise_for_status()
        except requests.RequestException as e:
            raise click.ClickException(f"cannot reach the gateway's admin endpoint at {url}: {e}") from None
        rep = r.json()
    try:  # the proxy answers /health with 503 while its HMS does not answer: still a report
        if no_proxy:
            rep["proxy"] = {"unreachable": no_proxy}
        else:
            rep["proxy"] = requests.get(f"{proxy_url.rstrip('/')}/health", timeout=10, verify=verify).json()
    except (requests.RequestException, ValueError) as e:
        rep["proxy"] = {"unreachable": f"cannot reach the proxy's admin endpoint at {proxy_url}: {e}"}
    if as_json:
        emit_json(rep)
        return
    out = table("figure", "value", title="metaproxy report")
    if "cluster" in rep:
        _cluster_rows(out, rep["cluster"])
    _cache_rows(out, rep)
    _outage_rows(out, rep)
    show(out)


def _cluster_report(cfg: Any) -> dict[str, Any]:
    """Every node's report, the cluster's totals and the balancer's view of each node, in the
    shape of one gateway's report (its figures the totals) plus ``cluster``."""
    import requests

    from metaproxy.cache.cluster import balancer_view, merge_reports, nodes

    reports: dict[str, dict[str, Any]] = {}
    for n in nodes(cfg):
        try:
            r = requests.get(f"{n.admin}/report", timeout=5)
            r.raise_for_status()
            reports[n.name] = r.json()
        except (requests.RequestException, ValueError) as e:
            reports[n.name] = {"error": f"cannot reach its admin endpoint at {n.admin}: {e}"}
    total = merge_reports(reports)
    first = next((r for r in reports.values() if "error" not in r), {})
    rep: dict[str, Any] = {
        **{k: v for k, v in first.items() if k in ("mounts", "pins", "ttls", "block_size")},
        **total,
        "tiers": {
            "pinned_files": 0,
            **total["tiers"],
        },
        "hit_ratio_definition": "bytes served from cache / bytes served, all nodes",
        "bytes_served_per_mount": _sum_maps(r.get("bytes_served_per_mount", {}) for r in reports.values()),
        "disk_errors": sum(int(r.get("disk_errors", 0)) for r in reports.values()),
        "corrupt_blocks": sum(int(r.get("corrupt_blocks", 0)) for r in reports.values()),
        "ufs_not_answering": {
            k: v for r in reports.values() for k, v in r.get("ufs_not_answering", {}).items()
        },
        "stale_served": sum(int(r.get("stale_served", 0)) for r in reports.values()),
        "cluster": {
            "endpoint": cfg.cluster.endpoint,
            "nodes": reports,
            "balancer": balancer_view(cfg.cluster.balancer_stats) if cfg.cluster.balancer_stats else {},
        },
    }
    return rep


def _sum_maps(maps: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in maps:
        for k, v in m.items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _cluster_rows(out: Any, cl: dict[str, Any]) -> None:
    """One row per node (its tiers, hit ratio, UFS bytes, and the balancer's view of it)."""
    bal = cl.get("balancer", {})
    if "" in bal:
        out.add_row("balancer", bal[""]["error"])
    for name, r in cl["nodes"].items():
        seen = bal.get(name)
        state = f"balancer: {seen['status']} ({seen['check']})" if seen else ""
        if "error" in r:
            out.add_row(f"node {name}", f"NOT ANSWERING: {r['error']}" + (f"; {state}" if state else ""))
            continue
        t = r["tiers"]
        ufs = sum(int(n) for n in r.get("bytes_read_per_ufs", {}).values())
        out.add_row(
            f"node {name}",
            f"memory {_mib(t['memory_used'])} of {_mib(t['memory_capacity'])}, "
            f"disk {_mib(t['disk_used'])} of {_mib(t['disk_capacity'])}; hit ratio {r['hit_ratio']:.1%}; "
            f"read from UFS {_mib(ufs)}" + (f"; {state}" if state else ""),
        )
    out.add_row(
        "cluster", f"{len(cl['nodes'])} nodes behind {cl['endpoint'] or '(no balancer)'}; totals below"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _cache_rows(out: Any, rep: dict[str, Any]) -> None:
    mib, t = _mib, rep["tiers"]
    out.add_row(
        "memory tier", f"{mib(t['memory_used'])} of {mib(t['memory_capacity'])} ({t['memory_blocks']} blocks)"
    )
    out.add_row(
        "disk tier", f"{mib(t['disk_used'])} of {mib(t['disk_capacity'])} ({t['disk_blocks']} blocks)"
    )
    out.add_row("pinned", f"{mib(t['pinned_bytes'])} in {t['pinned_files']} file versions")
    out.add_row("hit ratio", f"{rep['hit_ratio']:.1%} ({rep['hit_ratio_definition']})")
    out.add_row(
        "served from memory / disk", f"{mib(rep['bytes_from_memory'])} / {mib(rep['bytes_from_disk'])}"
    )
    for ufs, n in sorted(rep["bytes_read_per_ufs"].items()):
        out.add_row(f"read from UFS {ufs}", mib(n))
    for mount, n in sorted(rep["bytes_served_per_mount"].items()):
        out.add_row(f"served for mount {mount}", mib(n))
    out.add_row("evictions memory / disk", f"{rep['evictions_memory']} / {rep['evictions_disk']}")
    out.add_row("disk errors / corrupt blocks", f"{rep['disk_errors']} / {rep['corrupt_blocks']}")
    for path in rep.get("pins", []):
        out.add_row("pinned path", f"/{path}")
    for path, ttl in rep.get("ttls", {}).items():
        out.add_row("TTL", f"/{path}: {ttl:g}s")


def _since(wall: float | None) -> str:
    """A wall-clock time as UTC, and how long ago."""
    import datetime as dt
    import time

    if wall is None:
        return "?"
    at = dt.datetime.fromtimestamp(wall, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"since {at} ({_age(time.time() - wall)})"


def _age(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _outage_rows(out: Any, rep: dict[str, Any]) -> None:
    """The metastore (through the proxy's health) and the UFSes (through the gateway's)."""
    px = rep["proxy"]
    if "unreachable" in px:
        out.add_row("metastore proxy", px["unreachable"])
    else:
        up = px["upstream"]
        out.add_row(
            "metastore",
            "answering" if up["answering"] else f"NOT ANSWERING {_since(up['down_since'])}: {up['reason']}",
        )
        log_ = px["notification_log"]
        if not log_.get("followed"):
            out.add_row("notification log", "not followed (answers kept for metadata_stale_after)")
        else:
            state = "read" if log_.get("up") else f"not read: {log_.get('error')}"
            out.add_row(
                "notification log", f"{state}; last event {log_.get('last_event')}; lost {log_.get('lost')}"
            )
        mc = px["metadata_cache"]
        out.add_row(
            "metadata cache",
            f"{mc['entries']} answers, {_mib(mc['bytes'])} of {_mib(mc['capacity'])}; "
            f"{mc['stale_served']} served stale{_last(mc['last_stale_age_s'])}",
        )
    for root, down in sorted(rep.get("ufs_not_answering", {}).items()):
        out.add_row(f"UFS {root}", f"NOT ANSWERING {_since(down['down_since'])}: {down['reason']}")
    out.add_row(
        "gateway served stale",
        f"{rep.get('stale_served', 0)} listings and statuses{_last(rep.get('last_stale_age_s'))}",
    )


def _last(age_s: float | None) -> str:
    return "" if age_s is None else f", the last {_age(age_s)} old"


#: the entry-point group through which other installed packages add commands: each entry point
#: names a click command or group, added under the entry point's name (the development
#: package metaproxy-devstack adds ``stack`` and ``sample``)
COMMANDS_ENTRY_POINTS = "metaproxy.cli"


def _register_groups() -> None:
    from metaproxy.cache.cli import cache
    from metaproxy.migrate.cli import migrate, policy

    cli.add_command(cache)
    cli.add_command(policy)
    cli.add_command(migrate)
    for ep in entry_points(group=COMMANDS_ENTRY_POINTS):
        if ep.name in cli.commands:
            continue  # an installed package does not replace metaproxy's own commands
        try:
            command = ep.load()
        except Exception as e:
            click.echo(f"metaproxy: cannot load the {ep.name!r} commands ({ep.value}): {e}", err=True)
            continue
        if isinstance(command, click.Command):
            cli.add_command(command, ep.name)
        else:
            click.echo(f"metaproxy: {ep.value} is not a click command; {ep.name!r} left out", err=True)


_register_groups()


def main() -> None:
    """Entry point of the ``metaproxy`` console script."""
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ConfigError as e:
        click.echo(f"metaproxy: config error: {e}", err=True)
        sys.exit(2)
    except Exception as e:
        if "metaproxy.state.db" in sys.modules:  # only then can it be a state error
            from metaproxy.state.db import StateError

            if isinstance(e, StateError):
                click.echo(f"metaproxy: state error: {e}", err=True)
                sys.exit(2)
        raise
