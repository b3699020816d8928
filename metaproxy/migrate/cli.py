"""``metaproxy policy``: add, list and remove migration policies (kept in the state DB)."""

from __future__ import annotations

import re
from typing import Any

import click

from metaproxy.config import load_config
from metaproxy.migrate.policy import PolicyError, add_policy, list_policies, remove_policy
from metaproxy.state import open_state


@click.group("policy")
@click.pass_context
def policy(ctx: click.Context) -> None:
    """Migration policies, e.g. ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)."""
    cfg = load_config(ctx.obj["config_path"])
    ctx.obj["db"] = open_state(cfg.state_path)


@policy.command("add")
@click.argument("path")
@click.argument("expr")
@click.option("--name", default="", help="The policy's name (default: from PATH).")
@click.pass_context
def add(ctx: click.Context, path: str, expr: str, name: str) -> None:
    """Add a policy for the units under PATH (a mount path such as /tpcds/store_sales)."""
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", path.strip("/")) or "root"
    try:
        parsed = add_policy(ctx.obj["db"], name, path, expr)
    except PolicyError as e:
        raise click.ClickException(f"bad policy: {e}") from None
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"policy {name}: {path} {parsed}")


@policy.command("list")
@click.pass_context
def list_cmd(ctx: click.Context) -> None:
    """The policies, one per line."""
    from rich.console import Console
    from rich.table import Table

    rows = list_policies(ctx.obj["db"])
    if not rows:
        click.echo("no policies")
        return
    table = Table("name", "path", "policy")
    for r in rows:
        table.add_row(r["name"], r["path"], r["expr"])
    Console().print(table)


@policy.command("remove")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Remove a policy (units already migrated stay where they are)."""
    try:
        remove_policy(ctx.obj["db"], name)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"removed policy {name}")


@policy.command("status")
@click.argument("name", required=False)
@click.pass_context
def status(ctx: click.Context, name: str | None) -> None:
    """Units per state (qualified, copying, verified, flipped, removed, failed, skipped), bytes
    and the last error, per policy."""
    from rich.console import Console
    from rich.table import Table

    from metaproxy.migrate.loop import policy_status
    from metaproxy.migrate.store import MigrationStore

    cfg = load_config(ctx.obj["config_path"])
    store = MigrationStore(cfg.state_path)
    try:
        report = policy_status(store, name)
    finally:
        store.close()
    if not report:
        click.echo("no units yet" + (f" for policy {name}" if name else ""))
        return
    table = Table("policy", "units", "states", "copied / total", "last error")
    for pname, p in sorted(report.items()):
        states = ", ".join(f"{k} {v}" for k, v in sorted(p["states"].items()))
        table.add_row(
            pname,
            str(p["units"]),
            states,
            f"{p['copied_bytes'] / 2**20:,.1f} / {p['bytes'] / 2**20:,.1f} MiB",
            p["last_error"],
        )
    Console().print(table)


@click.group("migrate")
def migrate() -> None:
    """Run the migration loop."""


@migrate.command("once")
@click.option("--policy", "only", default=None, help="Only this policy.")
@click.pass_context
def once(ctx: click.Context, only: str | None) -> None:
    """One pass over the policies: discover units, copy, verify, flip, remove."""
    import os

    from metaproxy.migrate.loop import Migrator, crash_hook

    m = Migrator(load_config(ctx.obj["config_path"]))
    if os.environ.get("METAPROXY_CRASH_AT"):
        m.before_step = crash_hook(os.environ["METAPROXY_CRASH_AT"])
    from rich.progress import Progress

    try:
        with Progress(transient=False) as bar:
            tasks: dict[str, Any] = {}

            def progress(policy: str, done: int, total: int) -> None:
                if policy not in tasks:
                    tasks[policy] = bar.add_task(f"policy {policy}", total=total)
                bar.update(tasks[policy], completed=done, total=total)

            r = m.run_once(only, progress)
    finally:
        m.close()
    click.echo(", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())) or "no units")
    for e in r.errors:
        click.echo(f"error: {e}", err=True)


@migrate.command("run")
@click.pass_context
def run(ctx: click.Context) -> None:
    """Run the loop: one pass every [migrate] interval, until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from metaproxy.migrate.loop import Migrator

    m = Migrator(load_config(ctx.obj["config_path"]))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        m.serve(stop)
    finally:
        m.close()
