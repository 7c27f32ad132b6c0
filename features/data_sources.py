"""Batch sources: the contract's snapshot tables under the data root (declarations only).

The data root is $ONEPIECE_DATA (made absolute here, because Feast stores the path in
the registry), else the project's ./data. With ONEPIECE_FEAST_PROFILE=scale the same
tables are declared as SparkSources for the Spark offline store
(profiles/scale.feature_store.yaml).
"""

import os
from pathlib import Path

from feast import FileSource
from feast.data_format import ParquetFormat

_root = os.environ.get("ONEPIECE_DATA") or str(Path(__file__).resolve().parent.parent / "data")
DATA_ROOT = _root if "://" in _root else os.path.abspath(_root)
SCALE_PROFILE = os.environ.get("ONEPIECE_FEAST_PROFILE") == "scale"


def _snapshot_source(table: str, description: str):
    """A source over ``<data root>/<table>/`` (Parquet, one row per entity snapshot)."""
    common = dict(
        name=f"{table}_source",
        timestamp_field="event_timestamp",
        description=description,
        tags={"contract_table": table},
    )
    if SCALE_PROFILE:
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        return SparkSource(path=f"{DATA_ROOT}/{table}", file_format="parquet", **common)
    return FileSource(path=f"{DATA_ROOT}/{table}", file_format=ParquetFormat(), **common)


items_source = _snapshot_source("items", "Daily item snapshots: shop, category, price, rates.")
users_source = _snapshot_source("users", "User profile snapshots.")
queries_source = _snapshot_source("queries", "Query snapshots: text and popularity.")
