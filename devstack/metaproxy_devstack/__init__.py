"""metaproxy's development tooling. First of all the local stack: real HDFS, a real Hive
Metastore, an S3 server and Trino, on loopback, with metaproxy's own proxy and gateway.

metaproxy sits between these systems, so the demo, the integration tests and the benchmarks
all need them running. :mod:`metaproxy_devstack.launcher` installs them (through the Maven
poms in this package's ``java/``) and starts them on free loopback ports, checks each one is
really ready, logs into the stack directory's ``logs/`` and stops each by its own pid. The
stack directory is ``$METAPROXY_STACK_DIR``, else ``.stack`` under the current working
directory (see :mod:`metaproxy_devstack.common`).

Commands: ``metaproxy stack up|down|status`` and ``metaproxy sample load`` (the ``metaproxy``
command finds them through this package's ``metaproxy.cli`` entry points), or the same through
``python -m metaproxy_devstack stack …``. ``make demo`` runs :mod:`metaproxy_devstack.demo`.

The running stack is described in ``endpoints.json`` in the stack directory:

``hms``       ``thrift://127.0.0.1:PORT`` — the on-prem Hive Metastore
``hms_version`` ``"2.3"``, ``"3.1"`` or ``"4.0"`` — which Hive Metastore it is (``stack up --hms``;
              Hive 2.3.10, 3.1.3 or 4.0.1)
``hdfs``      ``hdfs://127.0.0.1:PORT``   — the NameNode RPC address
``webhdfs``   ``http://127.0.0.1:PORT``   — the NameNode's WebHDFS address
``s3``        ``http://127.0.0.1:PORT``   — the S3 server (S3Proxy, objects kept under ``data/s3/``)
``trino``     ``http://127.0.0.1:PORT``   — Trino's HTTP endpoint
``s3_access_key``, ``s3_secret_key``, ``s3_region`` — credentials of the local S3 server
``proxy``     ``thrift://127.0.0.1:PORT`` — metaproxy's metastore proxy, profile ``cloud``
``proxy_onprem``, ``proxy_passthrough`` — the same proxy's ``onprem`` and ``passthrough`` listeners
``admin``     ``http://127.0.0.1:PORT``   — the proxy's admin endpoint (``/health``, ``/metrics``)
``config``    the metaproxy config file the stack's services run with
``gateway``, ``gateway_access_key``, ``gateway_secret_key`` — the cache gateway
``gateway_admin`` ``http://127.0.0.1:PORT`` — the gateway's admin endpoint (node 1's in a cluster)
``gateways``  the number of gateway nodes (``stack up --gateways N``, default 1); with more than
              one, ``gateway`` is HAProxy in front of them, ``balancer_stats`` its statistics
              page, and ``gateway_nodes`` lists each node: ``name`` (g1…), ``component``
              (``gateway``, ``gateway2``…), ``s3``, ``admin``
``wan``       only with ``stack up --wan``: the simulated link — ``rtt_ms``, ``mbit``, ``host``
              (127.0.0.2), ``control`` (GET/PUT the link's settings and byte counts), and the
              cloud side's addresses of the on-prem services: ``hms``, ``hdfs``, ``webhdfs``
``secure``    only with ``stack up --secure``: ``realm``, ``kdc``, ``krb5_conf``, ``principals`` and
              ``keytabs`` (by role: hive, hdfs, http, trino, metaproxy, user, intruder, short),
              ``ca_file``, ``cert_file``, ``key_file``, ``truststore``, ``store_password``; the
              HMS, HDFS, WebHDFS (``https://``), the proxy's listeners, the gateway and the admin
              endpoints (``https://``) are then addressed as ``localhost``, the host of their
              principals and certificate
``pids``, ``ports`` — each component's process and each named port (for ``stack down``, reuse)
``started_at``, ``start_seconds`` — when the stack started, and how long install and start took

Trino has three Hive catalogs: ``direct`` (the HMS itself, reading HDFS itself — the baseline),
``onprem`` (through the proxy's ``cloud`` listener) and ``passthrough`` (through its
``passthrough`` listener); with the WAN link also ``direct_cache`` (``direct`` plus Trino's
file-system cache) and ``direct_cache_ttl`` (that plus Trino's metastore and listing caches,
each trusted for 60 s: the fastest Trino can be made, stale for up to its TTL).

With the WAN link (``metaproxy stack up --wan``), HDFS and the HMS are the on-prem side: the
cloud side (Trino, the proxy, the gateway) reaches them only through the relays of
:mod:`metaproxy_devstack.wanlink` on 127.0.0.2, and the DataNode registers under that address so
data crosses the link too. The top-level ``hms``, ``hdfs`` and ``webhdfs`` keys stay the
on-prem side's own addresses (loading data does not cross the link).

With ``metaproxy stack up --secure`` every part authenticates with Kerberos: an MIT KDC of
the stack's own (:mod:`metaproxy_devstack.components.kdc`, which also makes a throw-away CA),
HDFS with Kerberos RPC, SPNEGO, SASL data transfer and HTTPS only, the HMS with SASL, Trino's
catalogs with Kerberos (to the proxy over TLS), metaproxy with its own principal and TLS on its
listeners, gateway and admin endpoints. It runs Hive Metastore 4.0 without the WAN link.

Nothing here is needed in production: a real deployment points metaproxy at its own HMS,
HDFS and S3.
"""

__version__ = "0.1.0"
