"""``metaproxy policy``: add, list and remove migration policies (kept in the state DB)."""

from __future__ import annotations

import re

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
