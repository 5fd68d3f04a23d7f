"""An S3 server (moto) on 127.0.0.1 for the deploy tests, and a way to list what it holds."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

BUCKET = "synthloop-test"


@contextlib.contextmanager
def s3_server(bucket: str = BUCKET) -> Iterator[dict[str, str]]:
    """Start an S3 server on 127.0.0.1 with ``bucket``; yield the environment that points at it.

    The caller puts the environment where it is needed (this process, child processes):
    ``AWS_ENDPOINT_URL`` (honoured by botocore, so by s3fs and everything above it) and
    throw-away credentials.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "synthloop-test",
               "AWS_SECRET_ACCESS_KEY": "synthloop-test", "AWS_DEFAULT_REGION": "us-east-1"}
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                     aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()


def keys(prefix: str, bucket: str = BUCKET) -> list[str]:
    """Object keys under ``prefix``, listed with boto3 (not through fsspec) from the server in ``os.environ``."""
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
