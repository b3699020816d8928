"""The gateway's error boundary and request metrics: one place for every request.

Each request gets a request id; whatever a route raises becomes an S3 error document with the
right status (:func:`error_response`, a plain function), and every request is counted once by
operation and status. The routes only name their operation (``request[OP]``)::

    s3api.S3Error (carries its code)  → that status and code
    UfsNotFound                       → 404 NoSuchKey
    UfsError, BlockShort              → 503 SlowDown (clients retry; the file may have changed)
    anything else                     → 500 InternalError, logged with its traceback
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from metaproxy.cache import s3api
from metaproxy.cache.memfile import BlockShort
from metaproxy.cache.metrics import REQUESTS
from metaproxy.ufs import UfsError, UfsNotFound

log = logging.getLogger("metaproxy.gateway")

#: request ids: this process's random prefix and a counter (unique, and cheaper than a UUID each)
_RID_PREFIX = uuid.uuid4().hex[:8]
_request_numbers = itertools.count()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: the S3 operation a request turned out to be (set by the routes; for the metrics)
OP = web.RequestKey("op", str)
#: the request's id (in every error document and response)
REQUEST_ID = web.RequestKey("request_id", str)


def as_s3_error(e: Exception, where: str = "") -> s3api.S3Error:
    """The S3 error a failure is answered with."""
    if isinstance(e, s3api.S3Error):
        return e
    if isinstance(e, UfsNotFound):
        return s3api.NoSuchKey("no such key")
    if isinstance(e, UfsError | BlockShort):  # BlockShort: the file changed under us
        log.warning("gateway: UFS failed for %s: %s", where, e)
        return s3api.SlowDown(f"the under file system is unavailable; retry: {e}")
    log.exception("gateway: internal error serving %s", where)
    return s3api.S3Error(f"metaproxy gateway: internal error: {type(e).__name__}: {e}")


def error_response(e: Exception, method: str, request_id: str, where: str = "") -> web.Response:
    """The response to a failed request (HEAD responses carry no body, as S3's)."""
    err = as_s3_error(e, where)
    headers = {"x-amz-request-id": request_id}
    if method == "HEAD":
        return web.Response(status=err.status, headers=headers)
    return web.Response(
        status=err.status, body=err.xml(request_id), content_type="application/xml", headers=headers
    )


@web.middleware
async def s3_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = f"{_RID_PREFIX}{next(_request_numbers):08x}"
    request[REQUEST_ID] = rid
    request[OP] = "unknown"
    try:
        resp = await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:
        resp = error_response(e, request.method, rid, request.path)
    REQUESTS.labels(request[OP], str(resp.status)).inc()
    return resp
