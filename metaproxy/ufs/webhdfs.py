"""A small WebHDFS client: HDFS as a UFS, over HTTP, with no native libraries.

pyarrow's ``HadoopFileSystem`` needs ``libhdfs.so`` and a JVM in the process; WebHDFS needs
neither and is on by default on every NameNode, which is what an on-prem cluster reachable
over a wide-area link offers. Reads follow the NameNode's redirect to a DataNode.

Every method takes an ``hdfs://`` URI or a plain HDFS path (``/warehouse/tpcds/item``) and
answers in the form it was asked. Paths are percent-encoded here and nowhere else, so names
with spaces, ``%``, ``=`` or non-ASCII characters reach HDFS exactly as given.
"""

from __future__ import annotations

import builtins
import http.client
import json
import ssl
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from metaproxy.ufs import FileStatus, Ufs, UfsError, UfsNotFound, UfsUnavailable

if TYPE_CHECKING:
    from metaproxy.security import Security


def hdfs_path(uri_or_path: str) -> str:
    """``hdfs://nn:8020/a/b`` → ``/a/b``; a plain absolute path is returned unchanged."""
    if "://" in uri_or_path:
        path = urlsplit(uri_or_path).path
        # urlsplit leaves escapes alone: HDFS names are not URL-encoded in HMS locations
        return path or "/"
    return uri_or_path


class WebHdfs(Ufs):
    """HDFS as a UFS: a thread-safe WebHDFS client (one HTTP session per thread)."""

    def __init__(
        self, base_url: str, user: str = "hdfs", timeout: float = 60.0, security: Security | None = None
    ) -> None:
        from metaproxy.security import client_security

        self.base_url = base_url.rstrip("/")
        self.user = user
        self.timeout = timeout
        self._local = threading.local()
        #: SPNEGO (Kerberos) and the CA an https:// WebHDFS is verified with; by default what
        #: the process's config asks for
        self.security = security if security is not None else client_security()
        self.spnego = bool(self.security is not None and self.security.spnego and self.security.kerberos)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            # the cluster is reached directly: no proxy variables or .netrc (reading them on
            # every request was a visible share of a block fetch)
            s.trust_env = False
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            if self.security is not None and self.security.ca_file:
                s.verify = self.security.ca_file
            self._local.session = s
        if self.spnego:
            from metaproxy.security import spnego_auth

            assert self.security is not None
            # the login's current ticket (it is renewed from the keytab as it ages); the
            # NameNode's cookie saves the handshake on later requests
            s.auth = spnego_auth(self.security)
        return s

    def _tls(self) -> ssl.SSLContext:
        """The client TLS context for DataNodes (verified with the CA file, if one is set)."""
        ctx = getattr(self, "_tls_context", None)
        if ctx is None:
            ca = self.security.ca_file if self.security is not None else ""
            ctx = self._tls_context = ssl.create_default_context(cafile=ca or None)
        return ctx

    def _url(self, path: str) -> str:
        p = hdfs_path(path)
        if not p.startswith("/"):
            raise UfsError(f"WebHDFS paths must be absolute: {p!r}")
        return f"{self.base_url}/webhdfs/v1{quote(p, safe='/')}"

    def _request(
        self,
        method: str,
        path: str,
        op: str,
        params: dict[str, Any] | None = None,
        *,
        data: Any = None,
        stream: bool = False,
        allow_redirects: bool = True,
        url: str | None = None,
    ) -> requests.Response:
        query = {"op": op} if self.spnego else {"op": op, "user.name": self.user}
        if params:
            query.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()})
        target = url or self._url(path)
        try:
            resp = self._session.request(
                method,
                target,
                params=None if url else query,
                data=data,
                stream=stream,
                allow_redirects=allow_redirects,
                timeout=self.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as e:
            raise UfsUnavailable(f"WebHDFS {op} {hdfs_path(path)}: {type(e).__name__}: {e}") from e
        if resp.status_code >= 400:
            self._raise(resp, op, path)
        return resp

    @classmethod
    def _raise(cls, resp: requests.Response, op: str, path: str) -> None:
        body = resp.content[: 64 * 1024]
        resp.close()
        cls._raise_raw(resp.status_code, body, op, path)

    @staticmethod
    def _raise_raw(status: int, body: bytes, op: str, path: str) -> None:
        try:
            remote = json.loads(body).get("RemoteException", {})
        except (ValueError, AttributeError):
            remote = {}
        if not isinstance(remote, dict):
            remote = {}
        exc = remote.get("exception", "")
        msg = remote.get("message", body[:200].decode("utf-8", "replace"))
        where = f"WebHDFS {op} {hdfs_path(path)}"
        if status == 404 or exc == "FileNotFoundException":
            raise UfsNotFound(f"{where}: not found")
        if status >= 500 and exc not in ("IOException",):
            raise UfsUnavailable(f"{where}: HTTP {status} {exc}: {msg}")
        raise UfsError(f"{where}: HTTP {status} {exc}: {msg}")

    @staticmethod
    def _status(path: str, raw: dict[str, Any]) -> FileStatus:
        return FileStatus(
            path=path,
            length=int(raw.get("length", 0)),
            mtime_ms=int(raw.get("modificationTime", 0)),
            is_dir=raw.get("type") == "DIRECTORY",
        )

    # -- reads ----------------------------------------------------------------------------

    def stat(self, uri: str) -> FileStatus:
        """Length, modification time and kind of one path."""
        raw = self._request("GET", uri, "GETFILESTATUS").json()["FileStatus"]
        return self._status(uri, raw)

    def list(self, uri: str) -> builtins.list[FileStatus]:
        """The direct children of a directory (a file lists as itself), sorted by name."""
        raw = self._request("GET", uri, "LISTSTATUS").json()["FileStatuses"]["FileStatus"]
        base = uri.rstrip("/") or "/"
        out = []
        for r in raw:
            suffix = r.get("pathSuffix", "")
            child = base if not suffix else (base.rstrip("/") + "/" + suffix)
            out.append(self._status(child, r))
        return sorted(out, key=lambda s: s.path)

    def open_read(self, path: str, offset: int, length: int) -> ReadStream:
        """Bytes ``[offset, offset+length)`` as a stream to ``readinto`` caller-owned buffers.

        The NameNode's redirect is followed by hand and the DataNode's body read with
        ``http.client`` straight into the caller's buffer (the block cache's reused receive
        buffer): requests' chunked iteration would copy every byte once more, and at a few
        hundred MB/s that copy was a visible share of the gateway's CPU.
        """
        where = f"WebHDFS OPEN {hdfs_path(path)}"
        resp = self._request(
            "GET", path, "OPEN", {"offset": offset, "length": length}, allow_redirects=False, stream=True
        )
        location = resp.headers.get("Location")
        if resp.status_code == 200:  # an HttpFS gateway serves the bytes itself
            return ReadStream(resp.raw, where, resp.close)
        resp.close()
        if resp.status_code not in (301, 302, 303, 307, 308) or not location:
            raise UfsError(f"{where}: expected the bytes or a redirect, got HTTP {resp.status_code}")
        target = urlsplit(location)
        conn: http.client.HTTPConnection
        if target.scheme == "https":
            conn = http.client.HTTPSConnection(
                target.hostname or "", target.port, timeout=self.timeout, context=self._tls()
            )
        else:
            conn = http.client.HTTPConnection(target.hostname or "", target.port, timeout=self.timeout)
        try:
            conn.request("GET", f"{target.path}?{target.query}" if target.query else target.path)
            r = conn.getresponse()
            if r.status >= 400:
                self._raise_raw(r.status, r.read(64 * 1024), "OPEN", path)
            if r.status != 200:
                raise UfsError(f"{where}: the DataNode answered HTTP {r.status}")
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise UfsUnavailable(f"{where}: the DataNode did not answer: {e}") from e
        except BaseException:
            conn.close()
            raise
        return ReadStream(r, where, conn.close)

    # -- writes ---------------------------------------------------------------------------

    def write(self, uri: str, data: bytes | Iterable[bytes], overwrite: bool = True) -> None:
        """Write a whole file (two steps: the NameNode names a DataNode, the data goes there)."""
        resp = self._request("PUT", uri, "CREATE", {"overwrite": overwrite}, allow_redirects=False)
        location = resp.headers.get("Location")
        resp.close()
        if not location:
            raise UfsError(f"WebHDFS CREATE {hdfs_path(uri)}: the NameNode gave no DataNode location")
        self._request("PUT", uri, "CREATE", data=data, url=location).close()

    def delete(self, uri: str, recursive: bool = False) -> bool:
        """Delete a path; False if it did not exist."""
        return bool(self._request("DELETE", uri, "DELETE", {"recursive": recursive}).json().get("boolean"))

    def set_times(self, path: str, mtime_ms: int | None = None, atime_ms: int | None = None) -> None:
        """Set a file's modification and/or access time (milliseconds since the epoch)."""
        params: dict[str, Any] = {}
        if mtime_ms is not None:
            params["modificationtime"] = mtime_ms
        if atime_ms is not None:
            params["accesstime"] = atime_ms
        self._request("PUT", path, "SETTIMES", params).close()


class ReadStream:
    """One response body, read with ``readinto`` into the caller's buffer, or with ``read``
    whole (see :meth:`WebHdfs.open_read`)."""

    def __init__(self, body: Any, where: str, close: Callable[[], None]) -> None:
        self._body = body
        self._where = where
        self._close = close

    def readinto(self, buf: memoryview, /) -> int:
        try:
            return int(self._body.readinto(buf))
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as e:
            raise UfsUnavailable(f"{self._where}: read interrupted: {e}") from e

    def read(self, n: int, /) -> bytes:
        try:
            return bytes(self._body.read(n))
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as e:
            raise UfsUnavailable(f"{self._where}: read interrupted: {e}") from e

    def close(self) -> None:
        self._close()
