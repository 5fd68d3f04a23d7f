"""Connecting to Ray: an embedded local instance by default, a cluster when an address is given."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray if there is one; else connect to ``address`` / ``RAY_ADDRESS``; else start a local one.

    A Ray that this function started is shut down on exit; one it only joined is left running.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # address="local": always a new embedded instance, never a `ray start` cluster found on the machine.
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_resources() -> Mapping[str, float]:
    """The resources (CPU, GPU, memory...) of the Ray this process is connected to."""
    import ray

    return ray.cluster_resources()
