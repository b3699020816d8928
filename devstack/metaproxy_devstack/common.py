"""What every part of the local stack shares: where it lives, its fixed addresses and
credentials, and its error.

The stack directory is ``$METAPROXY_STACK_DIR`` when set, else ``.stack`` under the current
working directory (the repository root for ``make demo`` and ``make test``). It holds the
installed Java components (``lib/``), each component's config (``conf/``), data (``data/``),
log (``logs/``) and pid (``pids/``), and ``endpoints.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
#: with the WAN link, the on-prem services are reached from the cloud side on this address,
#: each through a relay of the link on the same port number
WAN_HOST = "127.0.0.2"
S3_ACCESS_KEY = "metaproxy-local"
S3_SECRET_KEY = "metaproxy-local-secret"
S3_REGION = "us-east-1"
GATEWAY_ACCESS_KEY = "metaproxy-gateway"
GATEWAY_SECRET_KEY = "metaproxy-gateway-secret"
TRINO_VERSION = "476"
#: the Hive Metastore versions the stack runs (``metaproxy stack up --hms``), each pinned to one
#: release in the poms of ``java/hms-<version>/``
HMS_RELEASES = {"2.3": "2.3.10", "3.1": "3.1.3", "4.0": "4.0.1"}
HMS_VERSIONS = tuple(HMS_RELEASES)
DEFAULT_HMS_VERSION = "4.0"


class StackError(RuntimeError):
    """A component could not be installed or did not become ready."""


def stack_dir() -> Path:
    """``$METAPROXY_STACK_DIR``, else ``.stack`` under the current working directory."""
    return Path(os.environ.get("METAPROXY_STACK_DIR") or Path.cwd() / ".stack").resolve()


def endpoints_path(directory: Path | None = None) -> Path:
    """The endpoints file of the stack in ``directory`` (default: :func:`stack_dir`)."""
    return (directory or stack_dir()) / "endpoints.json"


def load_endpoints(directory: Path | None = None) -> dict[str, Any] | None:
    """The running stack's endpoints, or None when no stack was started."""
    try:
        return dict(json.loads(endpoints_path(directory).read_text()))
    except (OSError, ValueError):
        return None
