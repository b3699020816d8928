"""``metaproxy cache``: load, pin, unpin, free and TTL, sent to a running gateway.

The commands talk to the gateway's admin endpoint (``[gateway] admin_port``), because the cache
lives in the gateway process. A target is a mount path (``/tpcds/store_sales``), a UFS URI
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


def _load(admin: Admin, targets: list[str], parallel: int) -> dict[str, float]:
    """Load every file of the targets with a progress bar; returns the summary figures."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    files: dict[str, int] = {}
    for t in targets:
        for f in admin.call("/cache/plan", path=t)["files"]:
            files[f["key"]] = int(f["length"])
    total = sum(files.values())
    fetched = already = 0
    started = time.monotonic()
    with Progress(
        TextColumn("loading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=False
    ) as bar:
        task = bar.add_task("load", total=total)
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(admin.call, "/cache/load", key=k) for k in files]
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


@cache.command("load")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.option("--parallel", default=4, show_default=True, help="Files loaded at once.")
@click.pass_context
def load(ctx: click.Context, target: str, partitions: tuple[str, ...], parallel: int) -> None:
    """Prefetch every block of TARGET into the cache."""
    targets = resolve_targets(ctx.obj["cfg"], target, partitions)
    s = _load(ctx.obj["admin"], targets, parallel)
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
    admin: Admin = ctx.obj["admin"]
    targets = resolve_targets(ctx.obj["cfg"], target, partitions)
    for t in targets:
        r = admin.call("/cache/pin", path=t)
        click.echo(f"pinned /{r['key']} ({r['files']} files); {_human(r['pinned_bytes'])} pinned in all")
    if then_load:
        s = _load(admin, targets, 4)
        click.echo(f"loaded {_human(s['bytes'])} ({_human(s['fetched'])} fetched) in {s['seconds']:.1f}s")


@cache.command("unpin")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.pass_context
def unpin(ctx: click.Context, target: str, partitions: tuple[str, ...]) -> None:
    """Let TARGET's blocks be evicted again."""
    for t in resolve_targets(ctx.obj["cfg"], target, partitions):
        r = ctx.obj["admin"].call("/cache/unpin", path=t)
        state = "unpinned" if r["was_pinned"] else "was not pinned; unpinned"
        click.echo(
            f"/{r['key']} {state} {r['files_unpinned']} files; {_human(r['pinned_bytes'])} pinned in all"
        )


@cache.command("free")
@click.argument("target")
@click.option("--partition", "partitions", multiple=True, help="k=v[,k2=v2] of a partition (repeatable).")
@click.pass_context
def free(ctx: click.Context, target: str, partitions: tuple[str, ...]) -> None:
    """Evict TARGET's blocks from both tiers (pinned files are kept: unpin them first)."""
    for t in resolve_targets(ctx.obj["cfg"], target, partitions):
        r = ctx.obj["admin"].call("/cache/free", path=t)
        kept = f"; {r['pinned_files_kept']} pinned files kept" if r["pinned_files_kept"] else ""
        click.echo(f"freed {_human(r['freed_bytes'])} of /{r['key']}{kept}")


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
        r = ctx.obj["admin"].call("/cache/ttl", path=t, ttl_s=seconds)
        click.echo(f"/{r['key']}: " + (f"TTL {duration}" if seconds is not None else "no TTL"))


@cache.command("rules")
@click.pass_context
def rules(ctx: click.Context) -> None:
    """The pinned paths and the TTLs the gateway holds."""
    import requests

    admin: Admin = ctx.obj["admin"]
    try:
        r = requests.get(f"{admin.url}/cache/rules", timeout=10, verify=admin.verify).json()
    except requests.RequestException as e:
        raise click.ClickException(f"cannot reach the gateway's admin endpoint at {admin.url}: {e}") from None
    for p in r["pins"]:
        click.echo(f"pin  /{p}")
    for p, s in r["ttls"].items():
        click.echo(f"ttl  /{p}  {s:g}s")
