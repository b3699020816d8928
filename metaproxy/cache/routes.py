"""The gateway's S3 routes: HEAD/GET object (ranged), ListObjectsV2, PutObject/DeleteObject on
writable mounts, and the bucket calls engines make — on one aiohttp application.

Every request must carry a valid AWS Signature V4 for the gateway bucket (path-style
addressing: ``/<bucket>/<key>``). Errors and metrics are the middleware's
(:mod:`~metaproxy.cache.middleware`); the routes only say which operation they serve.

The data path of a ranged GET, on one event loop:

* blocks in the memory tier are leased (a descriptor of their sealed memory file) and go to the
  socket with ``sendfile`` — no copy through Python; pieces under ``SENDFILE_MIN`` are written;
* missing blocks are claimed as runs: each run of consecutive misses is one streamed UFS read on
  the I/O pool, and the loop awaits each block's flight without holding a thread;
* a reader that continues its previous read gets read-ahead (:mod:`~metaproxy.cache.readahead`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

from aiohttp import web

from metaproxy.cache import listing, s3api
from metaproxy.cache.blocks import Lease
from metaproxy.cache.cluster import LOAD_QUERY, NODE_HEADER
from metaproxy.cache.files import Resolved
from metaproxy.cache.gateway import Gateway
from metaproxy.cache.manage import ManagementError
from metaproxy.cache.metrics import READ_AHEAD
from metaproxy.cache.middleware import OP, s3_boundary
from metaproxy.ufs import FileStatus

T = TypeVar("T")

#: bytes handed to the transport at a time when a block is written rather than sent
WRITE_SLICE = 1024 * 1024
#: the largest single PutObject body accepted (held in memory while it is checked and written)
MAX_PUT = 256 * 1024 * 1024
#: pieces smaller than this are written from a copy: sendfile's hand-over of the connection
#: costs more than copying a Parquet footer
SENDFILE_MIN = 128 * 1024


def _release(f: Any) -> None:
    """Done-callback for a future of a :class:`Lease`: close it (a failure is only consumed)."""
    if not f.cancelled() and f.exception() is None:
        f.result().close()


async def _send_block(
    request: web.Request, resp: web.StreamResponse, lease: Lease, offset: int, count: int
) -> None:
    """Send ``count`` bytes of a block from ``offset``: a block in a memory file goes to the socket
    with ``sendfile`` (the bytes never pass through Python); bytes go through the response."""
    transport = request.transport
    if (
        count >= SENDFILE_MIN
        and lease.file is not None
        and transport is not None
        and not transport.is_closing()
        # under TLS the bytes must pass through the TLS layer: no sendfile to the raw socket
        and transport.get_extra_info("sslcontext") is None
    ):
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_write_buffer_size() == 0:
            # first try: the socket usually takes the whole piece at once, and then none of the
            # event loop's sendfile hand-over (pause reading, wait for writable, resume) is due;
            # the loop is single-threaded and the transport's buffer is empty, so nothing else
            # writes to this socket meanwhile
            try:
                sent = os.sendfile(sock.fileno(), lease.file.fileno(), offset, count)
            except (BlockingIOError, InterruptedError):
                sent = 0
            offset, count = offset + sent, count - sent
            if not count:
                return
        try:
            await asyncio.get_running_loop().sendfile(transport, lease.file, offset, count, fallback=False)
            return
        except (NotImplementedError, asyncio.SendfileNotAvailableError):  # before any byte left
            pass
    data = memoryview(lease.read_range(offset, count))
    for at in range(0, len(data), WRITE_SLICE):  # small writes: less buffering
        await resp.write(data[at : at + WRITE_SLICE])


class S3Routes:
    """The request handlers of one gateway."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.g = gw.config.gateway

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the gateway's I/O pool (UFS calls block)."""
        return await asyncio.get_running_loop().run_in_executor(self.gw.pool, fn, *args)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.method not in ("GET", "HEAD", "PUT", "DELETE", "POST"):
            raise s3api.MethodNotAllowed(f"{request.method} is not supported by this gateway")
        s3api.verify_sigv4(
            s3api.SignedRequest(request.method, raw_path, raw_query, headers), self.gw.keys, self.g.region
        )
        parts = raw_path.lstrip("/").split("/", 1)
        bucket = unquote(parts[0])
        key = unquote(parts[1]) if len(parts) > 1 else ""
        if not bucket:
            raise s3api.AccessDenied("listing buckets is not supported")
        if bucket != self.g.bucket:
            raise s3api.NoSuchBucket("no such bucket", bucket)
        query = parse_qs(raw_query, keep_blank_values=True)
        if request.method == "POST":
            if LOAD_QUERY in query and key:
                request[OP] = "Load"
                return await self.load(key)
            request[OP] = "Post"
            raise s3api.NotImplementedS3(
                "multipart uploads and multi-object deletes are not supported by this gateway", key
            )
        if request.method in ("PUT", "DELETE"):
            request[OP] = "PutObject" if request.method == "PUT" else "DeleteObject"
            return await self.write_object(request, key, query, headers)
        if key:
            request[OP] = "HeadObject" if request.method == "HEAD" else "GetObject"
            return await self.get_object(request, key)
        return await self.bucket(request, query)

    async def load(self, key: str) -> web.Response:
        """Load every block of one file here: what the balancer sends the file's owner when the
        cluster is told to load it (:mod:`~metaproxy.cache.cluster`)."""
        try:
            doc = await self._run(self.gw.manager.load_file, key)
        except ManagementError as e:
            raise s3api.NoSuchKey(str(e), key) from None
        return web.json_response(doc)

    async def bucket(self, request: web.Request, query: dict[str, list[str]]) -> web.Response:
        if "location" in query:
            request[OP] = "GetBucketLocation"
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint '
                f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{self.g.region}</LocationConstraint>'
            ).encode()
            return web.Response(body=body, content_type="application/xml")
        if request.method == "HEAD":
            request[OP] = "HeadBucket"
            return web.Response(status=200)
        request[OP] = "ListObjectsV2"
        q = listing.ListQuery.parse(query)
        entries = await self._run(self.gw.list_entries, q.prefix)
        body = listing.page_xml(self.g.bucket, q, listing.page(entries, q))
        return web.Response(body=body, content_type="application/xml")

    # -- reads ------------------------------------------------------------------------------

    async def get_object(self, request: web.Request, key: str) -> web.StreamResponse:
        gw = self.gw
        r = gw.resolve_fresh(key)
        if r is None:  # the file's status is not fresh in memory: ask the UFS, off the loop
            r = await self._run(gw.resolve, key)
        gw.reads.note(r.key)
        length = r.status.length
        headers = {
            "ETag": s3api.etag(r.ufs_uri, length, r.status.mtime_ms),
            "Last-Modified": s3api.http_date(r.status.mtime_ms),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers, "Content-Length": str(length)})
        rng = s3api.parse_range(request.headers.get("Range"), length)
        start, end = rng if rng else (0, length)
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{length}"
        resp = web.StreamResponse(status=206 if rng else 200, headers=headers)
        resp.content_length = end - start
        await self._send_range(request, resp, r, start, end)
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    async def _send_range(
        self, request: web.Request, resp: web.StreamResponse, r: Resolved, start: int, end: int
    ) -> None:
        """Send bytes ``[start, end)`` of ``r``, fetching up to ``read_ahead_blocks`` blocks ahead
        of the one being sent, and past the range's end for a sequential reader."""
        gw = self.gw
        bs = gw.cache.block_size
        ahead = gw.read_ahead.after_read(r.digest, start, end, r.status.length)
        window = max(0, self.g.read_ahead_blocks)
        last_index = (end - 1) // bs
        pending: dict[int, asyncio.Future[Lease]] = {}
        try:
            pos = start
            while pos < end:
                index = pos // bs
                for i in range(index, min(last_index, index + window) + 1):
                    if i not in pending:
                        pending[i], ahead = self._want_block(r, i, last_index, window, ahead)
                if ahead and index + window >= last_index:  # the range's end is under way
                    gw.fetch_ahead(r, end, ahead)
                    ahead = 0
                with await pending.pop(index) as lease:
                    if not resp.prepared:  # only now: a UFS that fails the first block gets a 503
                        await resp.prepare(request)
                    off = pos - index * bs
                    n = min(lease.size, end - index * bs) - off
                    await _send_block(request, resp, lease, off, n)
                gw.served(r.mount.path, n)
                pos += n
        finally:
            for f in pending.values():  # a reader gone early: the blocks still land in the cache
                f.add_done_callback(_release)

    def _want_block(
        self, r: Resolved, i: int, last_index: int, window: int, ahead: int
    ) -> tuple[asyncio.Future[Lease], int]:
        """A future of a lease on block ``i``, and the read-ahead still to start.

        A memory hit needs no thread hop. A miss starts a run: this block and the window's worth
        after it come from the UFS in one read, and the next blocks find it under way; a run
        that reaches the range's end carries the read-ahead on (one stream, the reader's
        blocks first)."""
        gw = self.gw
        hit = gw.cached_block(r, i)
        if hit is not None:
            done: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
            done.set_result(hit)
            return done, ahead
        if not gw.cache.in_flight(r.block(i)):
            run_last = min(last_index, i + window)
            if ahead and run_last == last_index:
                run_last = min(
                    (r.status.length - 1) // gw.cache.block_size,
                    last_index + gw.read_ahead.take_run(r.digest),
                )
                ahead = 0
            started = gw.fetch_run(r, i, run_last)
            READ_AHEAD.inc(max(0, started - (min(last_index, run_last) - i + 1)))
        return asyncio.ensure_future(self._wait_block(r, i)), ahead

    async def _wait_block(self, r: Resolved, index: int) -> Lease:
        """A lease on a block being fetched, waited for on the event loop (no thread held while
        the UFS answers); a block on disk, or one evicted meanwhile, is read on the pool."""
        gw = self.gw
        flight = gw.cache.in_flight(r.block(index))
        if flight is not None:
            await asyncio.wrap_future(flight.done)
            lease = gw.cache.landed(flight)
            if lease is not None:
                return lease
        return await self._run(gw.block, r, index)

    # -- writes -----------------------------------------------------------------------------

    async def write_object(
        self, request: web.Request, key: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> web.Response:
        gw = self.gw
        if "uploads" in query or "uploadId" in query:
            raise s3api.NotImplementedS3("multipart uploads are not supported by this gateway", key)
        if not key:
            raise s3api.AccessDenied("creating or deleting buckets is not allowed")
        if request.method == "PUT" and "x-amz-copy-source" in headers:
            raise s3api.NotImplementedS3("CopyObject is not supported by this gateway", key)
        hit = gw.mounts.resolve_key(key)
        if hit is None:
            raise s3api.AccessDenied("the key is under no mount", key)
        mount, rest = hit
        if mount.path not in self.g.writable_mounts:
            raise s3api.AccessDenied(
                f"mount {mount.path} is read-only at the gateway ([gateway] writable_mounts)", key
            )
        if not rest:
            raise s3api.AccessDenied("a mount's root is not an object", key)
        uri = gw.mounts.ufs_location(mount, rest, mount.create_target)
        if request.method == "DELETE":
            await self._run(gw.delete_object, mount, rest, uri)
            return web.Response(status=204)
        declared = request.content_length
        if declared is None:
            raise s3api.MissingContentLength("Content-Length is required", key)
        if declared > MAX_PUT:
            raise s3api.EntityTooLarge(f"a single PutObject may carry at most {MAX_PUT} bytes here", key)
        body = await request.content.readexactly(declared) if declared else b""
        s3api.check_payload(headers, body)
        st: FileStatus = await self._run(gw.put_object, mount, rest, uri, body)
        return web.Response(status=200, headers={"ETag": s3api.etag(uri, st.length, st.mtime_ms)})


def make_app(gw: Gateway, node: str = "") -> web.Application:
    """The gateway's aiohttp application: every path goes to :meth:`S3Routes.handle`. A node of
    a cluster names itself in every response (``x-metaproxy-node``)."""
    routes = S3Routes(gw)
    app = web.Application(client_max_size=MAX_PUT, middlewares=[s3_boundary])
    app.router.add_route("*", "/{tail:.*}", routes.handle)
    if node:

        async def name_node(_: web.Request, resp: web.StreamResponse) -> None:
            resp.headers[NODE_HEADER] = node

        app.on_response_prepare.append(name_node)
    return app
