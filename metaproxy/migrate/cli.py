"""``metaproxy policy`` (add, list, remove, status) and ``metaproxy migrate`` (once, run)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import click

from metaproxy.config import load_config
from metaproxy.console import emit_json, json_option, show, table
from metaproxy.migrate.policy import PolicyError, add_policy, list_policies, remove_policy
from metaproxy.state import open_state


@click.group("policy")
@click.pass_context
def policy(ctx: click.Context) -> None:
    """Migration policies, e.g. ufsMigrate(olderThan(1m), UFS[hdfs]:REMOVE, UFS[s3]:STORE)."""
    cfg = load_config(ctx.obj["config_path"])
    ctx.obj["db"] = ctx.with_resource(open_state(cfg.state))


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
@json_option
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """The policies, one per line."""
    rows = list_policies(ctx.obj["db"])
    if as_json:
        emit_json([dataclasses.asdict(r) for r in rows])
        return
    if not rows:
        click.echo("no policies")
        return
    t = table("name", "path", "policy", "enabled")
    for r in rows:
        t.add_row(r.name, r.path, r.expr, "yes" if r.enabled else "no")
    show(t)


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
@json_option
@click.pass_context
def status(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Units per state (qualified, copying, verified, flipped, removed, failed, skipped), bytes
    and the last error, per policy."""
    from metaproxy.migrate.loop import policy_status
    from metaproxy.state.units import MigrationStore

    report = policy_status(MigrationStore(ctx.obj["db"]), name)
    if as_json:
        emit_json(report)
        return
    if not report:
        click.echo("no units yet" + (f" for policy {name}" if name else ""))
        return
    t = table("policy", "units", "states", "copied / total", "last error")
    for pname, p in sorted(report.items()):
        states = ", ".join(f"{k} {v}" for k, v in sorted(p["states"].items()))
        t.add_row(
            pname,
            str(p["units"]),
            states,
            f"{p['copied_bytes'] / 2**20:,.1f} / {p['bytes'] / 2**20:,.1f} MiB",
            p["last_error"],
        )
    show(t)


@click.group("migrate")
def migrate() -> None:
    """Run the migration loop."""


@migrate.command("once")
@click.option("--policy", "only", default=None, help="Only this policy.")
@click.pass_context
def once(ctx: click.Context, only: str | None) -> None:
    """One pass over the policies: discover units, copy, verify, flip, remove."""
    import os

    from rich.progress import Progress

    from metaproxy.migrate.loop import Migrator, crash_hook

    m = Migrator(load_config(ctx.obj["config_path"]))
    if os.environ.get("METAPROXY_CRASH_AT"):
        m.before_step = crash_hook(os.environ["METAPROXY_CRASH_AT"])
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
    import os
    import signal
    import threading

    from metaproxy.migrate.loop import Migrator, crash_hook

    m = Migrator(load_config(ctx.obj["config_path"]))
    if os.environ.get("METAPROXY_CRASH_AT"):
        m.before_step = crash_hook(os.environ["METAPROXY_CRASH_AT"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        m.serve(stop)
    finally:
        m.close()
