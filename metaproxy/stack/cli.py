"""The ``metaproxy stack`` command group: start, stop and inspect the local stack."""

from __future__ import annotations

import json
import sys

import click

from metaproxy.stack.launcher import Stack, StackError, endpoints_path


@click.group()
def stack() -> None:
    """The local development stack: HDFS, Hive Metastore, S3 (moto) and Trino on loopback."""


@stack.command("up")
@click.option(
    "--wan",
    is_flag=True,
    help="Put HDFS and the HMS behind a simulated wide-area link (for the hybrid-cloud bench).",
)
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--mbit", type=click.FloatRange(min=0), default=200.0, show_default=True)
def stack_up(wan: bool, rtt_ms: float, mbit: float) -> None:
    """Start the stack (or reuse the running one) and print its endpoints.

    A running stack of the other kind (with or without the link) is stopped first.
    """
    try:
        ep = Stack(wan={"rtt_ms": rtt_ms, "mbit": mbit} if wan else None).up()
    except StackError as e:
        click.echo(f"stack: {e}", err=True)
        sys.exit(1)
    shown = {k: v for k, v in ep.items() if isinstance(v, str) and "secret" not in k}
    click.echo(json.dumps(shown, indent=2, sort_keys=True))


@stack.command("down")
def stack_down() -> None:
    """Stop every process of the stack."""
    Stack().down()


@stack.command("status")
def stack_status() -> None:
    """Say which components are up; exit 1 if any is not."""
    status = Stack().status()
    for name, ok in status.items():
        click.echo(f"{name:8s} {'up' if ok else 'DOWN'}")
    click.echo(f"endpoints: {endpoints_path()}")
    sys.exit(0 if all(status.values()) else 1)
