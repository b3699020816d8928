"""Helpers for the proxy's integration tests: the config of an in-process metastore proxy on the
test stack's HMS (the ``proxy`` fixture in conftest.py runs one), and its listeners' addresses."""

from __future__ import annotations

from typing import Any

from metaproxy.config import parse_config
from metaproxy.thrift_server import MetastoreProxy


def proxy_config(
    stack: dict[str, Any],
    tmp: str,
    proxy: dict[str, Any] | None = None,
    state: dict[str, str] | None = None,
    **metastore: Any,
) -> Any:
    """Three listeners (cloud, onprem, passthrough) on the stack's HMS, the /tpcds mount;
    ``proxy`` adds ``[proxy]`` keys, ``state`` is the ``[state]`` section (default: a new state
    of the proxy's own), the rest are ``[metastore]`` keys."""
    return parse_config(
        {
            "metastore": {"uris": [stack["hms"]], **metastore},
            "state": state or state_section(stack, tmp),
            "proxy": {
                **(proxy or {}),
                "mount_refresh": "200ms",
                "listener": [
                    {"port": 0, "profile": "cloud"},
                    {"port": 0, "profile": "onprem"},
                    {"port": 0, "profile": "passthrough"},
                ],
            },
            "mount": [{"path": "/tpcds", "ufs": f"{stack['hdfs']}/warehouse/tpcds"}],
        },
        "test.toml",
    )


def state_section(stack: dict[str, Any], tmp: str) -> dict[str, str]:
    """A new, empty state of the proxy's own: on the stack's PostgreSQL when the stack keeps
    its state there (the ``state`` suites' run on PostgreSQL), else a SQLite file in ``tmp``."""
    if stack.get("postgres"):
        from conftest import fresh_postgres_database

        return {"url": fresh_postgres_database(int(stack["postgres"].rsplit(":", 1)[1].split("/")[0]))}
    return {"path": f"{tmp}/state.db"}


def uri(p: MetastoreProxy, profile: str) -> str:
    port = next(port for _, port, prof in p.addresses if prof == profile)
    return f"thrift://127.0.0.1:{port}"
