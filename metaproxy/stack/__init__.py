"""The local stack: real HDFS, a real Hive Metastore, an S3 server and Trino, on loopback.

metaproxy sits between these systems, so the demo, the integration tests and the benchmarks
all need them running. This package installs (through ``java/pom.xml`` and Maven) and starts
them on free loopback ports, checks each one is really ready, logs into ``.stack/logs/`` and
stops each by its own pid. The running stack is described in ``.stack/endpoints.json``:

``hms``       ``thrift://127.0.0.1:PORT`` — the on-prem Hive Metastore
``hdfs``      ``hdfs://127.0.0.1:PORT``   — the NameNode RPC address
``webhdfs``   ``http://127.0.0.1:PORT``   — the NameNode's WebHDFS address
``s3``        ``http://127.0.0.1:PORT``   — the S3 server (moto)
``trino``     ``http://127.0.0.1:PORT``   — Trino's HTTP endpoint
``s3_access_key``, ``s3_secret_key``, ``s3_region`` — credentials of the local S3 server
``proxy``     ``thrift://127.0.0.1:PORT`` — metaproxy's metastore proxy, profile ``cloud``
``proxy_onprem``, ``proxy_passthrough`` — the same proxy's ``onprem`` and ``passthrough`` listeners
``admin``     ``http://127.0.0.1:PORT``   — the proxy's admin endpoint (``/health``, ``/metrics``)
``config``    the metaproxy config file the stack's services run with
``gateway``, ``gateway_access_key``, ``gateway_secret_key`` — the cache gateway

Trino has three Hive catalogs: ``direct`` (the HMS itself, reading HDFS itself — the baseline),
``onprem`` (through the proxy's ``cloud`` listener) and ``passthrough`` (through its
``passthrough`` listener).

Nothing here is needed in production: a real deployment points metaproxy at its own HMS,
HDFS and S3.
"""

from metaproxy.stack.launcher import STACK_DIR, Stack, endpoints_path, load_endpoints

__all__ = ["STACK_DIR", "Stack", "endpoints_path", "load_endpoints"]
