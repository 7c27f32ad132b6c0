"""Reading training-set shards (TRAINING_SCHEMA Parquet) written by the Beam trainset job."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onepiece.contract import conform
from onepiece.errors import UserError


def read_training_rows(directory: str | Path) -> pa.Table:
    """Every ``*.parquet`` shard under ``directory``, conformed to TRAINING_SCHEMA.

    Rows are sorted by (as_of, request_id) so that the result does not depend on how
    the job sharded its output. A bad shard raises ContractError naming the file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UserError(f"training-set directory not found: {root}")
    files = sorted(
        p for p in root.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )
    if not files:
        raise UserError(f"no Parquet shards under {root}")
    parts = [conform(pq.read_table(f), "training", str(f)) for f in files]
    table = pa.concat_tables(parts)
    if table.num_rows == 0:
        raise UserError(f"the training set under {root} has no rows")
    order = pc.sort_indices(table, [("as_of", "ascending"), ("request_id", "ascending")])
    return table.take(order)
