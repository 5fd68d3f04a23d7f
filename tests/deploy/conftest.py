"""Fixtures for the deploy tests: an S3 server on loopback that this process and its children use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from s3server import s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """An S3 server on 127.0.0.1 with the test bucket; its endpoint and credentials are in
    ``os.environ`` meanwhile, so `loop` processes started by the test (and their Ray workers) use it."""
    with s3_server() as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            mp.delenv(key, raising=False)
        yield env
