"""Location rules of the metastore proxy: outbound to clients, inbound back to the HMS.

Knows URIs, mounts and flips; knows nothing of sockets, Thrift or the cache.
"""

from metaproxy.rewrite.rules import PrefixMap, RewriteError, Rewriter

__all__ = ["PrefixMap", "RewriteError", "Rewriter"]
