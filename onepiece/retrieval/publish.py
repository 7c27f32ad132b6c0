"""Publish a retrieval model version: the served user tower and its item index, together.

A trained retrieval checkpoint (variant ``onepiece_retrieval``) becomes the next version
of ``model_repo/onepiece_user_tower/``; the item index of its item vectors, as of T, is
built inside the staged version directory (``<N>/item_index/`` with its manifest naming
version N), so the weights, the Triton config and the index appear in one rename, and
``config.pbtxt`` is regenerated after. The route then takes the index
``model_repo/onepiece_user_tower/<N>/item_index`` and finds its model beside it, in
process or served (``onepiece retrieve --user-vectors triton``).

Publishing the same checkpoint with the same item snapshot time again finds the version
it already is and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from onepiece.retrieval.index import DEFAULT_DIR, MANIFEST_NAME, IndexConfig, build_item_index


def _published(model_dir: Path, checkpoint: Path, as_of: dt.datetime) -> tuple[int, dict[str, Any]] | None:
    """An exported version of the same weights and config whose index is as of ``as_of``."""
    from onepiece.serving.export import exported_versions, model_digest

    wanted = model_digest(checkpoint)
    for version, path in sorted(exported_versions(model_dir).items()):
        manifest_path = path / DEFAULT_DIR / MANIFEST_NAME
        if not manifest_path.is_file() or model_digest(path) != wanted:
            continue
        manifest = json.loads(manifest_path.read_text())
        if dt.datetime.fromisoformat(manifest["item_snapshot_as_of"]) == as_of:
            return version, manifest
    return None


def publish_retrieval_version(
    checkpoint: str | Path,
    model_repo: str | Path,
    items: pa.Table,
    as_of: dt.datetime,
    index_config: IndexConfig = IndexConfig(),
    export_config: Any = None,
) -> dict[str, Any]:
    """Export ``checkpoint`` as the next ``onepiece_user_tower`` version with its item
    index (items of ``items`` as of ``as_of``) inside; returns the version, its directory,
    whether it was written now, and the index manifest."""
    from onepiece.serving.export import USER_TOWER_MODEL, ExportConfig, export_checkpoint

    checkpoint = Path(checkpoint)
    as_of = as_of.astimezone(dt.UTC)
    export_config = export_config or ExportConfig(model_name=USER_TOWER_MODEL)
    model_dir = Path(model_repo) / export_config.model_name
    found = _published(model_dir, checkpoint, as_of)
    if found is not None:
        version, manifest = found
        return {"version": version, "path": str(model_dir / str(version)), "published": False, "index": manifest}
    built: dict[str, Any] = {}

    def with_index(staging: Path, version: int) -> None:
        built.update(build_item_index(checkpoint, items, as_of, staging / DEFAULT_DIR, index_config, version))

    written = export_checkpoint(checkpoint, model_repo, config=export_config, fill=with_index)
    return {"version": int(written.name), "path": str(written), "published": True, "index": built}
