"""The run's dataset store: Zarr images and Parquet parameter and metric tables."""

from stores.dataset import DatasetView
from stores.errors import StoreError
from stores.query import check_read_only, format_table, query
from stores.runfile import FORMAT_VERSION
from stores.store import RunStore

__all__ = ["DatasetView", "FORMAT_VERSION", "RunStore", "StoreError", "check_read_only", "format_table", "query"]
