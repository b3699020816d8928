"""The simulated WAN link (:mod:`metaproxy_devstack.wanlink`) as a component: its relays put
each on-prem port on the link's address (127.0.0.2), in front of the same port on loopback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import requests

from metaproxy_devstack.common import HOST, WAN_HOST

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

#: the on-prem ports the cloud side reaches only through the link
ONPREM_PORTS = ("hdfs_rpc", "hdfs_http", "datanode", "datanode_http", "datanode_ipc", "hms")


def prepare_wan(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    """The link's relays: each on-prem port, on the link's address, to the same port on loopback."""
    assert st.wan is not None
    argv = [
        sys.executable,
        "-m",
        "metaproxy_devstack.wanlink",
        "--rtt-ms",
        str(st.wan["rtt_ms"]),
        "--mbit",
        str(st.wan["mbit"]),
        "--control",
        f"{HOST}:{st.port('wan_control')}",
    ]
    for name in ONPREM_PORTS:
        argv += ["--relay", f"{WAN_HOST}:{st.port(name)}={HOST}:{st.port(name)}"]
    return argv, {}


def wan_ready(st: StackLayout) -> bool:
    try:
        return requests.get(f"http://{HOST}:{st.port('wan_control')}/link", timeout=2).status_code == 200
    except requests.RequestException:
        return False
