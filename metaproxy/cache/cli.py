"""``metaproxy cache``: load, pin, unpin, free and TTL, sent to a running gateway.

The commands talk to the gateway's admin endpoint (``[gateway] admin_port``), because the cache
lives in the gateway process; with ``[cluster]`` nodes, to every node's, and a load goes through
the balancer to each file's owner (:mod:`metaproxy.cache.cluster`). A target is a mount path (``/tpcds/store_sales``), a UFS URI
under a mount (``hdfs://nn:8020/warehouse/tpcds/store_sales``), a gateway location
(``s3://metaproxy/tpcds/store_sales``) or a Hive table (``tpcds.store_sales``, optionally with
``--partition``), whose location is read from the on-prem metastore.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import click

from metaproxy.config import Config, load_config, parse_duration


class Admin:
    """A small client of the gateway's admin commands."""

    def __init__(self, url: str, verify: str | bool = True) -> None:
        self.url = url.rstrip("/")
        #: the CA file an https:// admin endpoint is verified with (True: the system's)
        self.verify = verify

    def call(self, command: str, **args: Any) -> dict[str, Any]:
        import requests

        try:
            r = requests.post(f"{self.url}{command}", json=args, timeout=600, verify=self.verify)
        except requests.RequestException as e:
            raise click.ClickException(
                f"cannot reach the gateway's admin endpoint at {self.url}: {e}"
            ) from None
        doc = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
        if r.status_code != 200:
            raise click.ClickException(doc.get("error") or f"{command}: HTTP {r.status_code}")
        return dict(doc)


def admin_url(cfg: Config, url: str) -> str:
    scheme = "https" if cfg.gateway.admin_tls else "http"
    return url or f"{scheme}://{cfg.proxy.admin_host}:{cfg.gateway.admin_port}"


class Nodes:
    """Where the commands go: one gateway's admin endpoint, or every node of ``[cluster]``.

    In a cluster, a file is loaded through the balancer, which sends it to its owner
    (:func:`~metaproxy.cache.cluster.signed_load`); rules (pin, unpin, free, TTL) go to every node.
    """

    def __init__(self, cfg: Config, url: str) -> None:
        from metaproxy.cache.cluster import ClusterAdmin

        self.cfg = cfg
        self.clustered = bool(cfg.cluster.nodes) and not url
        self.admin = Admin(admin_url(cfg, url), cfg.tls.ca_file or True)
        self.cluster = ClusterAdmin(
            cfg, lambda u, command, args: Admin(u, cfg.tls.ca_file or True).call(command, **args)
        )

    def any(self, command: str, **args: Any) -> dict[str, Any]:
        """A command every node answers alike (a plan of files)."""
        if not self.clustered:
            return self.admin.call(command, **args)
        from metaproxy.cache.cluster import ClusterError

        try:
            return self.cluster.any(command, **args)
        except ClusterError as e:
            raise click.ClickException(str(e)) from None

    def each(self, command: str, **args: Any) -> dict[str, dict[str, Any]]:
        """A command for every node; fails naming the nodes that did not take it."""
        if not self.clustered:
            return {"": self.admin.call(command, **args)}
        answers = self.cluster.each(command, **args)
        failed = {n: a["error"] for n, a in answers.items() if "error" in a}
        if failed:
            done = [n for n in answers if n not in failed]
            raise click.ClickException(
                f"{command} failed on node(s) {', '.join(f'{n} ({e})' for n, e in failed.items())}"
                + (f"; done on {', '.join(done)}" if done else "")
            )
        return answers

    def load(self, key: str) -> dict[str, Any]:
        """Load one file: on the gateway, or on its owner through the balancer."""
        if not self.clustered:
            return self.admin.call("/cache/load", key=key)
        from metaproxy.cache.cluster import ClusterError, signed_load

        if not self.cfg.cluster.endpoint:
            raise click.ClickException("[cluster] endpoint (the balancer) is needed to load a cluster")
        try:
            return signed_load(self.cfg.cluster.endpoint, self.cfg, key)
        except ClusterError as e:
            raise click.ClickException(str(e)) from None
        except Exception as e:  # the balancer unreachable
            raise click.ClickException(
                f"cannot reach the balancer at {self.cfg.cluster.endpoint}: {e}"
            ) from None


def _on(node: str) -> str:
    return f"[{node}] " if node else ""


def hive_locations(cfg: Config, target: str, partitions: tuple[str, ...]) -> list[str]:
    """The storage locations of ``db.table`` (or of some of its partitions) in the on-prem HMS."""
    from metaproxy.hms import connect

    db, _, table = target.partition(".")
    try:
        with connect(cfg.metastore.uris[0], cfg.metastore.call_timeout_s) as c:
            t = c.get_table_objects_by_name_req(_tables_request(db, table)).tables
            if not t:
                raise click.ClickException(f"no table {target} in the metastore")
            if not partitions:
                return [t[0].sd.location]
            out = []
            for spec in partitions:
                name = "/".join(p.strip() for p in spec.split(","))
                try:
                    out.append(c.get_partition_by_name(db, table, name).sd.location)
                except Exception as e:
                    raise click.ClickException(f"{target}: no partition {name} ({e})") from None
            return out
    except click.ClickException:
        raise
    except Exception as e:
        raise click.ClickException(f"cannot read {target} from the metastore: {e}") from None


def _tables_request(db: str, table: str) -> Any:
    from hive_metastore import ttypes

    return ttypes.GetTablesRequest(dbName=db, tblNames=[table])


def resolve_targets(cfg: Config, target: str, partitions: tuple[str, ...]) -> list[str]:
    if "://" in target or target.startswith("/"):
        if partitions:
            raise click.UsageError("--partition goes with a db.table target")
        return [target]
    if target.count(".") != 1:
        raise click.UsageError(f"{target!r}: expected a mount path (/x/y), a URI, or db.table")
    return hive_locations(cfg, target, partitions)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def _load(nodes: Nodes, targets: list[str], parallel: int) -> dict[str, float]:
    """Load every file of the targets with a progress bar; returns the summary figures."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    files: dict[str, int] = {}
    for t in targets:
        for f in nodes.any("/cache/plan", path=t)["files"]:
            files[f["key"]] = int(f["length"])
    total = sum(files.values())
    fetched = already = 0
    started = time.monotonic()
    with Progress(
        TextColumn("loading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=False
    ) as bar:
        task = bar.add_task("load", total=total)
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(nodes.load, k) for k in files]
            for fut in as_completed(futures):
                r = fut.result()
                fetched += int(r["fetched"])
                already += int(r["already_cached"])
                bar.advance(task, int(r["length"]))
    secs = time.monotonic() - started
    return {"files": len(files), "bytes": total, "fetched": fetched, "already": already, "seconds": secs}


@click.group("cache")
@click.option("--url", default="", help="The gateway's admin URL (default: from the config file).")
@click.pass_context
def cache(ctx: click.Context, url: str) -> None:
    """Manage the gateway's block cache: load, pin, unpin, free, ttl, rules."""
    cfg = load_config(ctx.obj["config_path"])
    ctx.obj["cfg"] = cfg
    ctx.obj["admin"] = Admin(admin_url(cfg, url), cfg.tls.ca_file or True)
    #: with [cluster] nodes (and no --url): every node, and loads through the balancer
    ctx.obj["nodes"] = Nodes(cfg, url)


@cache.command("load")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.option("--parallel", default=4, show_default=True, help="Files loaded at once.")
@click.pass_context
def load(ctx: click.Context, target: str, partitions: tuple[str, ...], parallel: int) -> None:
    """Prefetch every block of TARGET into the cache."""
    targets = resolve_targets(ctx.obj["cfg"], target, partitions)
    s = _load(ctx.obj["nodes"], targets, parallel)
    rate = s["fetched"] / s["seconds"] if s["seconds"] else 0.0
    click.echo(
        f"loaded {s['files']:.0f} files, {_human(s['bytes'])}: {_human(s['fetched'])} fetched from the UFS, "
        f"{_human(s['already'])} already cached, in {s['seconds']:.1f}s ({_human(rate)}/s)"
    )


@cache.command("pin")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.option("--load/--no-load", "then_load", default=True, show_default=True, help="Load it too.")
@click.pass_context
def pin(ctx: click.Context, target: str, partitions: tuple[str, ...], then_load: bool) -> None:
    """Keep TARGET's blocks in the cache: pinned blocks are never evicted (up to pinned_max)."""
    nodes: Nodes = ctx.obj["nodes"]
    targets = resolve_targets(ctx.obj["cfg"], target, partitions)
    for t in targets:
        for node, r in nodes.each("/cache/pin", path=t).items():
            click.echo(
                f"{_on(node)}pinned /{r['key']} ({r['files']} files); {_human(r['pinned_bytes'])} pinned in all"
            )
    if then_load:
        s = _load(nodes, targets, 4)
        click.echo(f"loaded {_human(s['bytes'])} ({_human(s['fetched'])} fetched) in {s['seconds']:.1f}s")


@cache.command("unpin")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.pass_context
def unpin(ctx: click.Context, target: str, partitions: tuple[str, ...]) -> None:
    """Let TARGET's blocks be evicted again."""
    for t in resolve_targets(ctx.obj["cfg"], target, partitions):
        for node, r in ctx.obj["nodes"].each("/cache/unpin", path=t).items():
            state = "unpinned" if r["was_pinned"] else "was not pinned; unpinned"
            click.echo(
                f"{_on(node)}/{r['key']} {state} {r['files_unpinned']} files; "
                f"{_human(r['pinned_bytes'])} pinned in all"
            )


@cache.command("free")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.pass_context
def free(ctx: click.Context, target: str, partitions: tuple[str, ...]) -> None:
    """Evict TARGET's blocks from both tiers (pinned files are kept: unpin them first)."""
    for t in resolve_targets(ctx.obj["cfg"], target, partitions):
        for node, r in ctx.obj["nodes"].each("/cache/free", path=t).items():
            kept = f"; {r['pinned_files_kept']} pinned files kept" if r["pinned_files_kept"] else ""
            click.echo(f"{_on(node)}freed {_human(r['freed_bytes'])} of /{r['key']}{kept}")


@cache.command("ttl")
@click.argument("target")
@click.argument("duration", required=False)
@click.option("--clear", is_flag=True, help="Remove the TTL of TARGET.")
@click.pass_context
def ttl(ctx: click.Context, target: str, duration: str | None, clear: bool) -> None:
    """Free TARGET's cached blocks DURATION (e.g. 30s, 10m, 2h, 7d) after they were cached."""
    if clear == (duration is not None):
        raise click.UsageError("give a DURATION, or --clear")
    seconds = None
    if duration is not None:
        try:
            seconds = parse_duration(duration)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    for t in resolve_targets(ctx.obj["cfg"], target, ()):
        for node, r in ctx.obj["nodes"].each("/cache/ttl", path=t, ttl_s=seconds).items():
            click.echo(f"{_on(node)}/{r['key']}: " + (f"TTL {duration}" if seconds is not None else "no TTL"))


@cache.command("rules")
@click.pass_context
def rules(ctx: click.Context) -> None:
    """The pinned paths and the TTLs the gateway holds."""
    import requests

    admin: Admin = ctx.obj["admin"]
    nodes: Nodes = ctx.obj["nodes"]
    if nodes.clustered:  # every node holds the same rules
        admin = Admin(nodes.cluster.nodes[0].admin)
    try:
        r = requests.get(f"{admin.url}/cache/rules", timeout=10, verify=admin.verify).json()
    except requests.RequestException as e:
        raise click.ClickException(f"cannot reach the gateway's admin endpoint at {admin.url}: {e}") from None
    for p in r["pins"]:
        click.echo(f"pin  /{p}")
    for p, s in r["ttls"].items():
        click.echo(f"ttl  /{p}  {s:g}s")


@cache.command("drain")
@click.argument("node")
@click.option("--undo", is_flag=True, help="Take the node back.")
@click.pass_context
def drain(ctx: click.Context, node: str, undo: bool) -> None:
    """Take NODE of [cluster] out of the balancer (its /health answers 503) before stopping it."""
    from metaproxy.cache.cluster import nodes

    found = [n for n in nodes(ctx.obj["cfg"]) if n.name == node]
    if not found:
        raise click.UsageError(f"no node {node!r} in [cluster]")
    r = Admin(found[0].admin).call("/drain", drain=not undo)
    click.echo(f"{node}: " + ("draining (the balancer takes it out)" if r["draining"] else "back in service"))
