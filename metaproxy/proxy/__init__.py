"""The metastore proxy's parts; :mod:`metaproxy.thrift_server` is its entry module.

* :mod:`~metaproxy.proxy.upstream` — connections to the on-prem HMS, and reading whole Thrift
  messages off a socket;
* :mod:`~metaproxy.proxy.shared` — what every connection shares: the rules in force (mounts,
  flips, a rewriter per profile) and the write policy;
* :mod:`~metaproxy.proxy.session` — one client connection: read a call, refuse or rewrite it,
  forward it, stream the rewritten reply back; the error boundary;
* :mod:`~metaproxy.proxy.metrics` — the proxy's Prometheus metrics.
"""
