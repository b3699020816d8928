"""The ``metaproxy`` command line: services, mounts, policies, the cache and reports.

Each sub-command group lives next to the code it drives and is registered here; this module
only wires them together and turns :class:`~metaproxy.config.ConfigError` into a clean exit.
"""

from __future__ import annotations

import sys

import click

from metaproxy import __version__
from metaproxy.config import ConfigError


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
