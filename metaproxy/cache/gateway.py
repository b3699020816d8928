"""The gateway: an S3-compatible HTTP endpoint serving mounted UFS files from the block cache.

Object keys are ``<mount>/<rest of the path>`` in the configured gateway bucket (path-style
addressing: ``/<bucket>/<key>``). Every request must carry a valid AWS Signature V4. Reads go
through the :class:`~metaproxy.cache.blocks.BlockCache`; a file's status is re-read from its
UFS once it is older than ``stale_after`` (the consistency bound), and blocks are keyed by the
version, so a rewritten file is never served from old blocks.

UFS failures become ``503 SlowDown`` (clients retry), a missing file ``404 NoSuchKey``, a
key outside every mount ``404 NoSuchKey`` without touching any UFS.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from aiohttp import web
from prometheus_client import Counter

from metaproxy.cache import s3api
from metaproxy.cache.blocks import BlockCache, BlockKey
from metaproxy.config import Config
from metaproxy.mounts import Mount, MountTable, load_mount_table, scheme_of
from metaproxy.ufs import FileStatus, UfsError, UfsNotFound, UfsUnavailable
from metaproxy.ufs.webhdfs import WebHdfs, hdfs_path

log = logging.getLogger("metaproxy.gateway")

REQUESTS = Counter("metaproxy_gateway_requests", "S3 requests to the gateway", ["op", "status"])
BYTES = Counter("metaproxy_gateway_bytes_served", "Bytes served by the gateway", ["mount"])


class ChangedUnderneath(UfsError):
    """The file changed while a block of it was read (its length no longer matches)."""


@dataclass
class Resolved:
    mount: Mount
    ufs_uri: str
    status: FileStatus


class UfsReaders:
    """Stat, list and read on the members of a mount (HDFS through WebHDFS, S3 through boto3)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.webhdfs = WebHdfs(config.hdfs.webhdfs, config.hdfs.user, config.hdfs.timeout_s)
        self._s3: Any = None
        self._lock = threading.Lock()

    @property
    def s3(self) -> Any:
        with self._lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config as BotoConfig

                c = self.config.s3
                self._s3 = boto3.client(
                    "s3",
                    endpoint_url=c.endpoint or None,
                    region_name=c.region,
                    aws_access_key_id=c.access_key or None,
                    aws_secret_access_key=c.secret_key or None,
                    config=BotoConfig(s3={"addressing_style": "path" if c.path_style else "auto"}),
                )
            return self._s3

    @staticmethod
    def _bucket_key(uri: str) -> tuple[str, str]:
        rest = uri.split("://", 1)[1]
        bucket, _, key = rest.partition("/")
        return bucket, key

    def stat(self, uri: str) -> FileStatus:
        if scheme_of(uri) == "s3":
            import botocore.exceptions

            bucket, key = self._bucket_key(uri)
            try:
                h = self.s3.head_object(Bucket=bucket, Key=key)
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise UfsNotFound(uri) from None
                raise UfsUnavailable(f"S3 HEAD {uri}: {e}") from e
            except botocore.exceptions.BotoCoreError as e:
                raise UfsUnavailable(f"S3 HEAD {uri}: {e}") from e
            return FileStatus(uri, int(h["ContentLength"]), int(h["LastModified"].timestamp() * 1000))
        return self.webhdfs.status(hdfs_path(uri))

    def read(self, uri: str, start: int, end: int) -> bytes:
        if scheme_of(uri) == "s3":
            import botocore.exceptions

            bucket, key = self._bucket_key(uri)
            try:
                r = self.s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
                return bytes(r["Body"].read())
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                raise UfsUnavailable(f"S3 GET {uri}: {e}") from e
        return self.webhdfs.read(hdfs_path(uri), start, end - start)

    def list_files(self, uri: str) -> list[FileStatus]:
        """Every file below a directory (recursively), with paths relative to ``uri``."""
        if scheme_of(uri) == "s3":
            bucket, key = self._bucket_key(uri)
            prefix = key.rstrip("/") + "/" if key else ""
            out = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for o in page.get("Contents", []):
                    out.append(
                        FileStatus(
                            o["Key"][len(prefix) :], int(o["Size"]), int(o["LastModified"].timestamp() * 1000)
                        )
                    )
            return out
        base = hdfs_path(uri).rstrip("/")
        try:
            files = self.webhdfs.walk_files(base)
        except UfsNotFound:
            return []
        return [FileStatus(f.path[len(base) + 1 :], f.length, f.mtime_ms) for f in files if f.path != base]


class Gateway:
    """The gateway's state: mounts, readers, the cache and the status cache."""

    def __init__(self, config: Config) -> None:
        self.config = config
        g = config.gateway
        self.cache = BlockCache(g.block_size, g.memory.capacity, g.disk.path or None, g.disk.capacity)
        self.readers = UfsReaders(config)
        self.mounts: MountTable = load_mount_table(config, None)
        self._statuses: dict[str, tuple[float, FileStatus]] = {}
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="gateway-io")
        self.keys = {g.access_key: g.secret_key} if g.access_key and g.secret_key else {}
        self.bytes_by_mount: dict[str, int] = {}
        self.bytes_by_ufs: dict[str, int] = {}
        self.refresh_mounts()

    def count(self, mount: str, served: int) -> None:
        with self._lock:
            self.bytes_by_mount[mount] = self.bytes_by_mount.get(mount, 0) + served

    def report(self) -> dict[str, Any]:
        """What an operator wants to know about the cache (``metaproxy report``)."""
        st = self.cache.stats
        with self._lock:
            by_mount = dict(self.bytes_by_mount)
            by_ufs = dict(self.bytes_by_ufs)
        return {
            "tiers": self.cache.usage(),
            "block_size": self.cache.block_size,
            "hit_ratio": st.hit_ratio,
            "hit_ratio_definition": "bytes served from cache / bytes served",
            "bytes_from_memory": st.bytes_from_memory,
            "bytes_from_disk": st.bytes_from_disk,
            "bytes_from_ufs": st.bytes_from_ufs,
            "bytes_read_per_ufs": by_ufs,
            "bytes_served_per_mount": by_mount,
            "memory_hits": st.memory_hits,
            "disk_hits": st.disk_hits,
            "misses": st.misses,
            "evictions_memory": st.evictions_memory,
            "evictions_disk": st.evictions_disk,
            "disk_errors": st.disk_errors,
            "corrupt_blocks": st.corrupt_blocks,
            "mounts": [m.path for m in self.mounts],
        }

    def refresh_mounts(self) -> None:
        from metaproxy.state import open_state

        try:
            db = open_state(self.config.state_path)
            self.mounts = load_mount_table(self.config, db)
            db.conn.close()
        except Exception as e:
            log.warning("could not reload mounts: %s", e)

    def resolve(self, key: str) -> Resolved:
        """The file a key names: the first member (in read priority) that has it."""
        hit = self.mounts.resolve_key(key)
        if hit is None:
            raise s3api.NoSuchKey("no such key", key)
        mount, rest = hit
        if not rest:
            raise s3api.NoSuchKey("no such key", key)
        for member in mount.read_priority:
            uri = self.mounts.ufs_location(mount, rest, member)
            try:
                st = self.status(uri)
            except UfsNotFound:
                continue
            if st.is_dir:
                break
            return Resolved(mount, uri, st)
        raise s3api.NoSuchKey("no such key", key)

    def status(self, uri: str) -> FileStatus:
        """A file's status, re-read from the UFS once older than ``stale_after``."""
        now = time.monotonic()
        with self._lock:
            hit = self._statuses.get(uri)
        if hit is not None and now - hit[0] < self.config.gateway.stale_after_s:
            return hit[1]
        st = self.readers.stat(uri)
        with self._lock:
            self._statuses[uri] = (now, st)
        return st

    def block(self, r: Resolved, index: int) -> bytes:
        bs = self.cache.block_size
        key = BlockKey(r.ufs_uri, r.status.length, r.status.mtime_ms, index)

        def fetch(k: BlockKey) -> bytes:
            start = k.index * bs
            end = min(k.length, start + bs)
            data = self.readers.read(k.path, start, end)
            if len(data) != end - start:
                raise ChangedUnderneath(f"{k.path} changed while being read")
            scheme = scheme_of(k.path)
            with self._lock:
                self.bytes_by_ufs[scheme] = self.bytes_by_ufs.get(scheme, 0) + len(data)
            return data

        return self.cache.get(key, fetch)


async def _run(gw: Gateway, fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(gw.pool, fn, *args)


def make_app(gw: Gateway) -> web.Application:
    g = gw.config.gateway

    async def handle(request: web.Request) -> web.StreamResponse:
        rid = uuid.uuid4().hex[:16]
        op = "unknown"
        try:
            raw_path, _, raw_query = request.raw_path.partition("?")
            headers = {k.lower(): v for k, v in request.headers.items()}
            if request.method not in ("GET", "HEAD"):
                op = "write"
                raise s3api.AccessDenied("this gateway is read-only: writes go to the mount's create target")
            s3api.verify_sigv4(
                s3api.SignedRequest(request.method, raw_path, raw_query, headers), gw.keys, g.region
            )
            parts = raw_path.lstrip("/").split("/", 1)
            bucket = unquote(parts[0])
            key = unquote(parts[1]) if len(parts) > 1 else ""
            if not bucket:
                raise s3api.AccessDenied("listing buckets is not supported")
            if bucket != g.bucket:
                raise s3api.NoSuchBucket("no such bucket", bucket)
            query = parse_qs(raw_query, keep_blank_values=True)
            if not key:
                if "location" in query:
                    op = "GetBucketLocation"
                    body = (
                        '<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint '
                        f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{g.region}</LocationConstraint>'
                    ).encode()
                    return web.Response(body=body, content_type="application/xml")
                if request.method == "HEAD":
                    op = "HeadBucket"
                    return web.Response(status=200)
                op = "ListObjectsV2"
                return await list_objects(query)
            op = "HeadObject" if request.method == "HEAD" else "GetObject"
            return await get_object(request, key)
        except s3api.S3Error as e:
            REQUESTS.labels(op, str(e.status)).inc()
            if request.method == "HEAD":
                return web.Response(status=e.status, headers={"x-amz-request-id": rid})
            return web.Response(
                status=e.status,
                body=e.xml(rid),
                content_type="application/xml",
                headers={"x-amz-request-id": rid},
            )
        except UfsNotFound:
            REQUESTS.labels(op, "404").inc()
            missing = s3api.NoSuchKey("no such key")
            return web.Response(status=404, body=missing.xml(rid), content_type="application/xml")
        except (UfsUnavailable, UfsError) as e:
            log.warning("gateway: UFS failed for %s: %s", request.path, e)
            REQUESTS.labels(op, "503").inc()
            err = s3api.SlowDown(f"the under file system is unavailable; retry: {e}")
            return web.Response(status=503, body=err.xml(rid), content_type="application/xml")

    async def get_object(request: web.Request, key: str) -> web.StreamResponse:
        r: Resolved = await _run(gw, gw.resolve, key)
        length = r.status.length
        headers = {
            "ETag": s3api.etag(r.ufs_uri, length, r.status.mtime_ms),
            "Last-Modified": s3api.http_date(r.status.mtime_ms),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            REQUESTS.labels("HeadObject", "200").inc()
            return web.Response(status=200, headers={**headers, "Content-Length": str(length)})
        rng = s3api.parse_range(request.headers.get("Range"), length)
        start, end = rng if rng else (0, length)
        status = 206 if rng else 200
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{length}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
        bs = gw.cache.block_size
        pos = start
        while pos < end:
            index = pos // bs
            data: bytes = await _run(gw, gw.block, r, index)
            off = pos - index * bs
            piece = memoryview(data)[off : min(len(data), end - index * bs)]
            await resp.write(piece)
            BYTES.labels(r.mount.path).inc(len(piece))
            gw.count(r.mount.path, len(piece))
            pos += len(piece)
        await resp.write_eof()
        REQUESTS.labels("GetObject", str(status)).inc()
        return resp

    async def list_objects(query: dict[str, list[str]]) -> web.Response:
        prefix = query.get("prefix", [""])[0]
        delimiter = query.get("delimiter", [""])[0]
        try:
            max_keys = int(query.get("max-keys", ["1000"])[0])
        except ValueError:
            raise s3api.InvalidArgument("max-keys must be an integer") from None
        max_keys = max(0, min(max_keys, 1000))
        token = query.get("continuation-token", [""])[0]
        start_after = query.get("start-after", [""])[0]
        after = start_after
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError:
                raise s3api.InvalidArgument("bad continuation token") from None
        entries = await _run(gw, collect, prefix)
        keys = sorted((e for e in entries if e.key.startswith(prefix) and e.key > after), key=lambda e: e.key)
        contents: list[s3api.ListEntry] = []
        prefixes: list[str] = []
        truncated = False
        last = ""
        for e in keys:
            if delimiter:
                i = e.key.find(delimiter, len(prefix))
                if i >= 0:
                    cp = e.key[: i + len(delimiter)]
                    if cp in prefixes or (after and cp <= after):
                        continue
                    if len(contents) + len(prefixes) >= max_keys:
                        truncated = True
                        break
                    prefixes.append(cp)
                    last = cp + "\uffff"  # resume after every key under this common prefix
                    continue
            if len(contents) + len(prefixes) >= max_keys:
                truncated = True
                break
            contents.append(e)
            last = e.key
        next_token = base64.urlsafe_b64encode(last.encode()).decode() if truncated else ""
        body = s3api.list_objects_v2_xml(
            g.bucket,
            prefix,
            delimiter,
            max_keys,
            contents,
            prefixes,
            truncated,
            next_token,
            token,
            start_after,
            query.get("encoding-type", [""])[0] == "url",
        )
        REQUESTS.labels("ListObjectsV2", "200").inc()
        return web.Response(body=body, content_type="application/xml")

    def collect(prefix: str) -> list[s3api.ListEntry]:
        """Every object under the mount directory the prefix falls in (filtered by the caller)."""
        if "/" not in prefix:
            out = []
            for m in gw.mounts:
                if m.name.startswith(prefix):
                    out.extend(collect(m.name + "/"))
            return out
        hit = gw.mounts.resolve_key(prefix[: prefix.rfind("/")])
        if hit is None:
            return []
        mount, rest = hit
        base_key = f"{mount.name}/{rest}".rstrip("/")
        seen: dict[str, s3api.ListEntry] = {}
        for member in reversed(mount.read_priority):  # earlier priority wins
            uri = gw.mounts.ufs_location(mount, rest, member)
            for f in gw.readers.list_files(uri):
                k = f"{base_key}/{f.path}"
                seen[k] = s3api.ListEntry(
                    k, f.length, f.mtime_ms, s3api.etag(f"{uri}/{f.path}", f.length, f.mtime_ms)
                )
        return list(seen.values())

    app = web.Application(client_max_size=1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


class GatewayServer:
    """The gateway on its own event-loop thread: start, stop, and the port it listens on."""

    def __init__(self, config: Config) -> None:
        self.gateway = Gateway(config)
        if not self.gateway.keys:
            raise ValueError("[gateway] access_key and secret_key are required")
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self._runner: web.AppRunner | None = None
        self.admin: Any = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._runner = web.AppRunner(make_app(self.gateway), access_log=None)
        self.loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.config.gateway.host, self.config.gateway.port)
        self.loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    def start(self) -> GatewayServer:
        from metaproxy.admin import AdminServer

        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the gateway did not start")
        g = self.config.gateway
        self.admin = AdminServer(
            self.config.proxy.admin_host,
            g.admin_port,
            lambda: {"ok": True, "port": self.port, "mounts": [m.path for m in self.gateway.mounts]},
            {"/report": self.gateway.report},
        )
        self.admin.start()
        return self

    def stop(self) -> None:
        if self.admin is not None:
            self.admin.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.gateway.pool.shutdown(wait=False)
