"""The one place an S3 client is made from ``[s3]`` (the gateway's fetcher, the migration loop)."""

from __future__ import annotations

from typing import Any

from metaproxy.config import S3Config


def s3_client(c: S3Config, max_attempts: int = 3) -> Any:
    """A boto3 S3 client for the configured endpoint, region, keys and addressing style."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=c.endpoint or None,
        region_name=c.region,
        aws_access_key_id=c.access_key or None,
        aws_secret_access_key=c.secret_key or None,
        config=BotoConfig(
            s3={"addressing_style": "path" if c.path_style else "auto"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
        ),
    )
