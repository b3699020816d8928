"""The development commands: ``stack`` (start, stop and inspect the local stack) and
``sample`` (load the sample data set into it).

The ``metaproxy`` command picks both groups up through the ``metaproxy.cli`` entry points of
this package (``metaproxy stack up``); ``python -m metaproxy_devstack`` runs them without it.
"""

from __future__ import annotations

import json
import sys

import click

from metaproxy_devstack.common import DEFAULT_HMS_VERSION, HMS_RELEASES, HMS_VERSIONS
from metaproxy_devstack.layout import STATE_BACKENDS

# the commands import what they drive when they run: the ``metaproxy`` command loads this
# module on every call


@click.group()
def stack() -> None:
    """The local development stack: HDFS, Hive Metastore, S3 (S3Proxy) and Trino on loopback."""


@stack.command("up")
@click.option(
    "--wan",
    is_flag=True,
    help="Put HDFS and the HMS behind a simulated wide-area link (for the hybrid-cloud bench).",
)
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--mbit", type=click.FloatRange(min=0), default=200.0, show_default=True)
@click.option(
    "--hms",
    "hms_version",
    type=click.Choice(HMS_VERSIONS),
    default=DEFAULT_HMS_VERSION,
    envvar="METAPROXY_HMS",
    show_default=True,
    show_envvar=True,
    help="The Hive Metastore version: "
    + ", ".join(f"{v} (Hive {r})" for v, r in HMS_RELEASES.items())
    + ". The WAN link needs 4.0.",
)
@click.option(
    "--gateways",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Gateway nodes; more than one run behind HAProxy, which hashes each object to one node "
    "(docs/cluster.md). On a running stack only the gateways change.",
)
@click.option(
    "--secure",
    is_flag=True,
    envvar="METAPROXY_SECURE",
    show_envvar=True,
    help="Kerberos (an MIT KDC of the stack's own) on HDFS, the HMS, Trino and metaproxy, and TLS "
    "from a throw-away CA. Needs Hive Metastore 4.0 and no WAN link.",
)
@click.option(
    "--state",
    type=click.Choice(STATE_BACKENDS),
    default="sqlite",
    envvar="METAPROXY_STATE",
    show_default=True,
    show_envvar=True,
    help="Where metaproxy keeps its state: a SQLite file, or a PostgreSQL server the stack starts "
    "(Debian's postgresql package). On a running stack only metaproxy's services change.",
)
def stack_up(
    wan: bool, rtt_ms: float, mbit: float, hms_version: str, gateways: int, secure: bool, state: str
) -> None:
    """Start the stack (or reuse the running one) and print its endpoints.

    A running stack of another kind (with or without the link, another Hive Metastore version)
    is stopped first; one with another number of gateway nodes keeps running, its gateways
    replaced.
    """
    from metaproxy_devstack.launcher import Stack, StackError

    wan_link = {"rtt_ms": rtt_ms, "mbit": mbit} if wan else None
    try:
        ep = Stack(wan=wan_link, hms_version=hms_version, gateways=gateways, secure=secure, state=state).up()
    except StackError as e:
        click.echo(f"stack: {e}", err=True)
        sys.exit(1)
    shown = {k: v for k, v in ep.items() if isinstance(v, str) and "secret" not in k}
    click.echo(json.dumps(shown, indent=2, sort_keys=True))


@stack.command("down")
def stack_down() -> None:
    """Stop every process of the stack."""
    from metaproxy_devstack.launcher import Stack

    Stack().down()


@stack.command("status")
def stack_status() -> None:
    """Say which components are up; exit 1 if any is not."""
    from metaproxy_devstack.launcher import Stack, endpoints_path

    st = Stack()
    status = st.status()
    for name, ok in status.items():
        click.echo(
            f"{name:8s} {'up' if ok else 'DOWN'}"
            + (f" (Hive {HMS_RELEASES[st.hms]})" if name == "hms" else "")
        )
    click.echo(f"endpoints: {endpoints_path()}")
    sys.exit(0 if all(status.values()) else 1)


@click.group()
def sample() -> None:
    """The TPC-DS-shaped sample data set."""


@sample.command("load")
@click.option("--scale", default=1.0, show_default=True, help="Multiplies the fact rows and items.")
@click.option("--partitions", default=120, show_default=True, help="store_sales partitions (days).")
@click.option("--seed", default=20261124, show_default=True)
def sample_load(scale: float, partitions: int, seed: int) -> None:
    """Write the sample to HDFS and register it in the HMS of the local stack."""
    from rich.progress import Progress

    from metaproxy_devstack import sample_data
    from metaproxy_devstack.launcher import load_endpoints

    ep = load_endpoints()
    if not ep:
        raise click.ClickException("no local stack is running: start it with `metaproxy stack up`")
    if "secure" in ep:  # the HMS and WebHDFS want Kerberos: as the stack's tools reach them
        from metaproxy_devstack.components.kdc import use_stack_kerberos
        from metaproxy_devstack.layout import StackLayout

        use_stack_kerberos(StackLayout(secure=True))
    with Progress() as bar:
        task = bar.add_task("writing Parquet files to HDFS", total=None)
        r = sample_data.load(
            ep["hms"],
            ep["hdfs"],
            ep["webhdfs"],
            scale=scale,
            seed=seed,
            partitions=partitions,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    click.echo(
        f"loaded {r.database}: {r.tables}, {r.partitions} partitions, {r.files} files, "
        f"{r.bytes / 1e6:.1f} MB in {r.seconds:.1f}s at {r.location}"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def devstack() -> None:
    """metaproxy's development tooling: the local stack and the sample data set."""


devstack.add_command(stack)
devstack.add_command(sample)
