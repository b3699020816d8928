"""ListObjectsV2 paging, as a plain function: which keys and common prefixes one page holds.

S3 pages by key order with ``max-keys`` (at most 1000), ``start-after`` and an opaque
continuation token; with a delimiter, every key that has the delimiter after the prefix is
folded into one common prefix, which counts as one entry of the page and is never split across
pages. The token here is the last key (or common prefix) of the page, base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote
from xml.sax.saxutils import escape

from metaproxy.cache import s3api

MAX_KEYS = 1000
_FROM_URLSAFE = str.maketrans("-_", "+/")


@dataclass(frozen=True)
class ListEntry:
    """One object of a listing: its key and what S3 says of it."""

    key: str
    length: int
    mtime_ms: int
    etag: str


@dataclass(frozen=True)
class ListQuery:
    """A ListObjectsV2 request's parameters."""

    prefix: str = ""
    delimiter: str = ""
    max_keys: int = MAX_KEYS
    start_after: str = ""
    token: str = ""
    url_encoded: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, Sequence[str]]) -> ListQuery:
        """From parsed query parameters; :class:`s3api.InvalidArgument` for bad ones."""

        def one(name: str) -> str:
            return query.get(name, [""])[0]

        raw_max = one("max-keys") or str(MAX_KEYS)
        try:
            max_keys = int(raw_max)
        except ValueError:
            raise s3api.InvalidArgument("max-keys must be an integer") from None
        q = cls(
            prefix=one("prefix"),
            delimiter=one("delimiter"),
            max_keys=max(0, min(max_keys, MAX_KEYS)),
            start_after=one("start-after"),
            token=one("continuation-token"),
            url_encoded=one("encoding-type") == "url",
        )
        q.after()  # a bad token is refused before any listing is made
        return q

    def after(self) -> str:
        """The key the page starts after: the token's, else ``start-after``."""
        if not self.token:
            return self.start_after
        try:  # strictly: a token this gateway did not hand out is refused, not misread
            raw = base64.b64decode(self.token.translate(_FROM_URLSAFE), validate=True)
            return raw.decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise s3api.InvalidArgument("bad continuation token") from None


@dataclass(frozen=True)
class Page:
    contents: list[ListEntry]
    prefixes: list[str]
    truncated: bool
    next_token: str


def page(entries: Iterable[ListEntry], q: ListQuery) -> Page:
    """One page of ``entries`` (in any order) for the query."""
    after = q.after()
    keys = sorted((e for e in entries if e.key.startswith(q.prefix) and e.key > after), key=lambda e: e.key)
    contents: list[ListEntry] = []
    prefixes: list[str] = []
    truncated = False
    last = ""
    for e in keys:
        if q.delimiter:
            i = e.key.find(q.delimiter, len(q.prefix))
            if i >= 0:
                cp = e.key[: i + len(q.delimiter)]
                if cp in prefixes or (after and cp <= after):
                    continue
                if len(contents) + len(prefixes) >= q.max_keys:
                    truncated = True
                    break
                prefixes.append(cp)
                last = cp + "\uffff"  # resume after every key under this common prefix
                continue
        if len(contents) + len(prefixes) >= q.max_keys:
            truncated = True
            break
        contents.append(e)
        last = e.key
    token = base64.urlsafe_b64encode(last.encode()).decode() if truncated else ""
    return Page(contents, prefixes, truncated, token)


def page_xml(bucket: str, q: ListQuery, p: Page) -> bytes:
    """The ListBucketResult document of one page."""

    def enc(s: str) -> str:
        return escape(quote(s, safe="/") if q.url_encoded else s)

    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<Name>{escape(bucket)}</Name><Prefix>{enc(q.prefix)}</Prefix>",
        f"<KeyCount>{len(p.contents) + len(p.prefixes)}</KeyCount><MaxKeys>{q.max_keys}</MaxKeys>",
        f"<Delimiter>{enc(q.delimiter)}</Delimiter>" if q.delimiter else "",
        f"<IsTruncated>{'true' if p.truncated else 'false'}</IsTruncated>",
        f"<ContinuationToken>{escape(q.token)}</ContinuationToken>" if q.token else "",
        f"<NextContinuationToken>{escape(p.next_token)}</NextContinuationToken>" if p.truncated else "",
        f"<StartAfter>{enc(q.start_after)}</StartAfter>" if q.start_after else "",
        "<EncodingType>url</EncodingType>" if q.url_encoded else "",
    ]
    for c in p.contents:
        parts.append(
            f"<Contents><Key>{enc(c.key)}</Key><LastModified>{s3api.iso_date(c.mtime_ms)}</LastModified>"
            f"<ETag>{escape(c.etag)}</ETag><Size>{c.length}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )
    for cp in p.prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{enc(cp)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()
