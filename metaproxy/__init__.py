"""metaproxy: zero-copy hybrid cloud for Hive/HDFS data lakes.

Three cooperating services sit between a cloud query engine and an on-prem data lake:

* the metastore proxy (:mod:`metaproxy.thrift_server`, :mod:`metaproxy.rewrite`) forwards every
  Hive Metastore call and rewrites storage locations both ways;
* the block-cache reader (:mod:`metaproxy.cache`) serves those locations over the S3 API from
  memory and disk, fetching HDFS blocks on demand;
* the migration loop (:mod:`metaproxy.migrate`) moves data to S3 under policies and flips the
  served locations once the copy is verified.
"""

__version__ = "0.1.0"
