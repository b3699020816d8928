"""The block-cache reader: an S3-compatible gateway over HDFS (and S3) with memory and disk tiers.

:mod:`metaproxy.cache.blocks` holds blocks and knows only a fetcher; the S3 protocol and the
UFS fetchers live beside it. Nothing here imports the proxy's rewrite rules.
"""
