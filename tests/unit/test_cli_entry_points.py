"""The ``metaproxy`` command adds the command groups of installed packages (``metaproxy.cli``
entry points): the development package's ``stack`` and ``sample``."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

import metaproxy.cli as metaproxy_cli
from metaproxy.cli import cli

pytestmark = pytest.mark.unit


def test_the_development_package_adds_stack_and_sample() -> None:
    assert {"stack", "sample"} <= set(cli.commands)
    r = CliRunner().invoke(cli, ["stack", "--help"])
    assert r.exit_code == 0, r.output
    assert {"up", "down", "status"} <= set(r.output.split())
    r = CliRunner().invoke(cli, ["sample", "load", "--help"])
    assert r.exit_code == 0 and "--scale" in r.output


class _EntryPoint:
    def __init__(self, name: str, value: str, load: Any) -> None:
        self.name, self.value, self._load = name, value, load

    def load(self) -> Any:
        return self._load()


def test_an_entry_point_that_does_not_load_is_left_out_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> Any:
        raise ImportError("no module named nowhere")

    @click.command()
    def hello() -> None:
        click.echo("hello")

    points = [
        _EntryPoint("broken", "nowhere:group", broken),
        _EntryPoint("notacommand", "somewhere:thing", lambda: object()),
        _EntryPoint("serve", "elsewhere:serve", lambda: hello),
        _EntryPoint("hello", "elsewhere:hello", lambda: hello),
    ]
    monkeypatch.setattr(metaproxy_cli, "entry_points", lambda group: points)
    monkeypatch.setattr(cli, "commands", dict(cli.commands))
    serve = cli.commands["serve"]
    metaproxy_cli._register_groups()
    assert "broken" not in cli.commands and "notacommand" not in cli.commands
    assert cli.commands["serve"] is serve  # an installed package does not replace metaproxy's own
    assert cli.commands["hello"] is hello
    err = capsys.readouterr().err
    assert "'broken'" in err and "no module named nowhere" in err and "'notacommand'" in err
