"""S3: S3Proxy (``java/s3proxy``) with its filesystem backend — every bucket a folder and every
object a file under the stack's ``data/s3/`` — on loopback, path-style, accepting only requests
signed (AWS Signature Version 4) with the stack's fixed credentials."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import requests

from metaproxy_devstack.common import HOST, S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY
from metaproxy_devstack.procs import java_home

if TYPE_CHECKING:
    from metaproxy_devstack.layout import StackLayout

#: the folder of S3Proxy's self-contained jar under the stack's ``lib/``
S3PROXY_LIB = "s3proxy"


def s3proxy_properties(st: StackLayout, basedir: Path) -> dict[str, str]:
    """S3Proxy's settings: where it listens, whom it lets in, where it keeps the objects."""
    return {
        "s3proxy.endpoint": f"http://{HOST}:{st.port('s3')}",
        "s3proxy.authorization": "aws-v4",
        "s3proxy.identity": S3_ACCESS_KEY,
        "s3proxy.credential": S3_SECRET_KEY,
        # S3 itself ignores request headers it does not act on; S3Proxy refuses them unless told
        # (Trino's AWS SDK asks ListObjectsV2 for x-amz-optional-object-attributes)
        "s3proxy.ignore-unknown-headers": "true",
        # the filesystem backend (S3Proxy 4's own; the property names are still jclouds')
        "jclouds.provider": "filesystem-nio2",
        "jclouds.filesystem.basedir": str(basedir),
    }


def prepare_s3(st: StackLayout) -> tuple[list[str], dict[str, str]]:
    basedir = st.data / "s3"
    basedir.mkdir(parents=True, exist_ok=True)
    conf = st.conf / "s3proxy.properties"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("".join(f"{k}={v}\n" for k, v in s3proxy_properties(st, basedir).items()))
    java = Path(java_home(17, 21)) / "bin" / "java"
    argv = [
        str(java),
        "-Xmx512m",
        # logback's own start-up report says nothing about S3
        "-Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener",
        "-cp",
        f"{st.lib / S3PROXY_LIB}/*",
        "org.gaul.s3proxy.Main",
        "--properties",
        str(conf),
    ]
    return argv, {}


def s3_ready(st: StackLayout) -> bool:
    """A signed ListBuckets answers: S3Proxy listens, and takes the stack's credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"http://{HOST}:{st.port('s3')}/"
    request = AWSRequest(method="GET", url=url, headers={"x-amz-content-sha256": _EMPTY_SHA256})
    SigV4Auth(Credentials(S3_ACCESS_KEY, S3_SECRET_KEY), "s3", S3_REGION).add_auth(request)
    try:
        r = requests.get(url, headers=dict(request.headers.items()), timeout=2)
        return r.status_code == 200 and b"ListAllMyBucketsResult" in r.content
    except requests.RequestException:
        return False


#: the SHA-256 of an empty body, which a signed GET carries
_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
