"""S3: moto in server mode, with the stack's fixed credentials."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from metaproxy_devstack.common import HOST, S3_ACCESS_KEY, S3_SECRET_KEY

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout


def prepare_s3(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    exe = Path(sys.executable).parent / "moto_server"
    argv = [str(exe) if exe.exists() else "moto_server", "-H", HOST, "-p", str(st.port("s3"))]
    return argv, {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}


def s3_ready(st: StackLayout) -> bool:
    try:
        r = requests.get(f"http://{HOST}:{st.port('s3')}/", timeout=2)
        return r.status_code == 200 and b"ListAllMyBucketsResult" in r.content
    except requests.RequestException:
        return False
