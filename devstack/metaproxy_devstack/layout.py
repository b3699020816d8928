"""The local stack's layout: its directory, its ports (chosen once, kept in endpoints.json),
its processes' pids and the options it was started with. Every component's ``prepare`` and
``ready`` function reads it; the launcher (:mod:`metaproxy_devstack.launcher`) extends it with
the lifecycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from metaproxy_devstack.common import DEFAULT_HMS_VERSION, HMS_VERSIONS, HOST, WAN_HOST, stack_dir
from metaproxy_devstack.procs import free_port

#: the state backends the stack runs metaproxy with (``stack up --state``)
STATE_BACKENDS = ("sqlite", "postgres")


@dataclass
class StackLayout:
    """Where the local stack lives and listens: its directory, ports, pids and options."""

    #: ``$METAPROXY_STACK_DIR``, else ``.stack`` under the current working directory
    dir: Path = field(default_factory=stack_dir)
    ports: dict[str, int] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    #: the simulated WAN link between the cloud side and the on-prem side, e.g.
    #: ``{"rtt_ms": 30, "mbit": 200}``; None: no link (the default stack)
    wan: dict[str, float] | None = None
    #: the Hive Metastore version (one of ``HMS_VERSIONS``: "2.3", "3.1", "4.0"); None: the
    #: running stack's, else the default (4.0)
    hms_version: str | None = None
    #: gateway nodes (``stack up --gateways N``); more than one run behind a load balancer
    #: (:mod:`metaproxy_devstack.components.balancer`). None: the running stack's, else 1
    gateways: int | None = None
    #: the secure stack (``stack up --secure``): a KDC, Kerberos on HDFS, the HMS, Trino and
    #: metaproxy, TLS from a throw-away CA (see :mod:`metaproxy_devstack.components.kdc`)
    secure: bool = False
    #: where metaproxy keeps its state (``stack up --state``): "sqlite" (a file, the default) or
    #: "postgres" (a PostgreSQL server of the stack's own). None: the running stack's, else sqlite
    state: str | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATE_BACKENDS:
            raise ValueError(f"unknown state backend {self.state!r}; expected one of {STATE_BACKENDS}")
        if self.gateways is not None and self.gateways < 1:
            raise ValueError(f"a stack runs at least one gateway, not {self.gateways}")
        if self.secure and self.gateways is not None and self.gateways > 1:
            raise ValueError("the secure stack runs one gateway (a cluster behind TLS is not built yet)")
        if self.hms_version is not None and self.hms_version not in HMS_VERSIONS:
            raise ValueError(
                f"unknown Hive Metastore version {self.hms_version!r}; expected one of {HMS_VERSIONS}"
            )

    @property
    def hms(self) -> str:
        """The Hive Metastore version the stack runs (or will run)."""
        return self.hms_version or DEFAULT_HMS_VERSION

    @property
    def state_backend(self) -> str:
        """Where metaproxy keeps its state on this stack: "sqlite" or "postgres"."""
        return self.state or "sqlite"

    @property
    def nodes(self) -> int:
        """The number of gateway nodes the stack runs (or will run)."""
        return self.gateways or 1

    @property
    def service_host(self) -> str:
        """The name clients use for the HMS and HDFS: with Kerberos, the host of their service
        principals (``localhost``), else the loopback address."""
        return "localhost" if self.secure else HOST

    @property
    def onprem_host(self) -> str:
        """The address the cloud side (Trino, proxy, gateway) uses for HDFS and the HMS."""
        return WAN_HOST if self.wan is not None else HOST

    # -- paths ----------------------------------------------------------------------------

    @property
    def lib(self) -> Path:
        return self.dir / "lib"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def conf(self) -> Path:
        return self.dir / "conf"

    def port(self, name: str) -> int:
        if name not in self.ports:
            self.ports[name] = free_port()
        return self.ports[name]
