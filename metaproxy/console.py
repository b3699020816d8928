"""How the command line prints: tables and text for people, JSON for scripts.

User and data text (policies such as ``UFS[hdfs]:REMOVE``, paths, error messages) is printed
as it is: the console never reads it as rich markup, which would swallow the brackets.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def console() -> Console:
    """A console that prints text literally (no markup, no highlighting, no emoji codes)."""
    return Console(markup=False, highlight=False, emoji=False)


def table(*columns: str, title: str | None = None) -> Table:
    return Table(*columns, title=title)


def show(t: Table) -> None:
    console().print(t)


def emit_json(doc: Any) -> None:
    """Print a document as JSON (sorted keys, two-space indent) for scripts."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))


#: the ``--json`` flag of every command that shows something
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
