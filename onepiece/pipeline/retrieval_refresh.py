"""The ``retrieval_refresh`` DAG's tasks: the onePiece retrieval route for the window at T.

    check_inputs ─> contexts ─> retrieve ─> guard ─> publish

- ``check_inputs``: the window's contract tables (the pre-rank refresh's check), the
  item index (it loads; its item snapshots are no newer than T) and the retrieval model
  it was built from; resets the run's staging root.
- ``contexts``: the window's context rows. When the pre-rank refresh has published
  ``contexts/<partition>`` for the same window, they are read from there (the two routes
  see the same IH, PA and SD); otherwise the Beam contexts job builds them into the
  staging root, side features from Feast as of T with the retrieval model's service.
- ``retrieve``: user vectors in-process or, with ``user_vectors`` "triton", from the
  index's version of the served ``onepiece_user_tower`` (an embedded tritonserver over
  the model repository, started as the scoring job starts one, or ``triton_urls``); the
  top-N items per request from the item index, loaded by the task
  (``onepiece.retrieval.route.run_route``), staged with a manifest.
- ``guard``: refuses a staged partition that misses requests, is mostly short of top-N,
  holds non-finite scores or gives every request the same list (``guard.evaluate_route``;
  ``guard_*`` Params, ``force_publish``), as the pre-rank refresh's guard does.
- ``publish``: ``retrieval/dt=YYYY-MM-DD/hour=HH/`` moved into place in one rename.

Everything is staged under ``<data>/_runs/retrieval_refresh/<partition>/``, so a failed
run publishes nothing and a rerun writes the same bytes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onepiece import storage
from onepiece.errors import UserError
from onepiece.pipeline import refresh
from onepiece.pipeline.config import RefreshConfig, _abs, _int, _pick
from onepiece.pipeline.guard import RouteGuardConfig
from onepiece.pipeline.refresh import MANIFEST_NAME, partition_of

if TYPE_CHECKING:
    from onepiece.serving.user_tower import UserTowerServing

RETRIEVAL_TABLE = "retrieval"


@dataclass(frozen=True)
class RetrievalRefreshConfig:
    """One route run: the window and data root of a refresh, and the item index to search.

    ``checkpoint`` None: the retrieval model is the index directory's parent (where
    ``onepiece index build`` puts it).
    """

    refresh: RefreshConfig
    item_index: str
    checkpoint: str | None = None
    top_n: int = 200
    guard: RouteGuardConfig = RouteGuardConfig()
    #: "inprocess", or "triton": the index's version of the served onepiece_user_tower
    #: (the refresh's model repository and Triton URLs; no URLs: an embedded server).
    user_vectors: str = "inprocess"

    def __post_init__(self) -> None:
        from onepiece.serving.user_tower import USER_VECTOR_PATHS

        if self.user_vectors not in USER_VECTOR_PATHS:
            raise UserError(f"user_vectors must be one of {', '.join(USER_VECTOR_PATHS)}, got {self.user_vectors!r}")

    @property
    def serving(self) -> UserTowerServing:
        """Where the user tower is served for ``user_vectors`` "triton"."""
        from onepiece.serving.user_tower import UserTowerServing

        serving = self.refresh.serving
        return UserTowerServing(model_repo=serving.model_repo, urls=serving.urls, protocol=serving.protocol)

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> RetrievalRefreshConfig:
        params = params or {}
        env = os.environ if env is None else env
        index = _pick(params, "item_index", env, "ONEPIECE_ITEM_INDEX")
        if not index:
            raise UserError(
                "retrieval_refresh needs an item index: the item_index Param or $ONEPIECE_ITEM_INDEX "
                "(`onepiece index build --checkpoint CKPT --as-of T` writes CKPT/item_index)"
            )
        checkpoint = _pick(params, "retrieval_checkpoint", env, "ONEPIECE_RETRIEVAL_CHECKPOINT")
        return cls(
            refresh=RefreshConfig.from_params(params, env),
            item_index=_abs(index),
            checkpoint=_abs(checkpoint) if checkpoint else None,
            top_n=_int(_pick(params, "top_n", env, "ONEPIECE_RETRIEVAL_TOP_N"), 200, "top_n"),
            guard=RouteGuardConfig.from_params(params),
            user_vectors=_pick(params, "user_vectors", env, "ONEPIECE_RETRIEVAL_USER_VECTORS") or "inprocess",
        )


def staging_root(config: RetrievalRefreshConfig, start: dt.datetime) -> Path:
    return Path(config.refresh.data) / "_runs" / "retrieval_refresh" / partition_of(start)


def _checkpoint(config: RetrievalRefreshConfig) -> Path:
    return Path(config.checkpoint) if config.checkpoint else Path(config.item_index).parent


def check_inputs(config: RetrievalRefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """The window's inputs (as the pre-rank refresh checks them), the index and its model."""
    from onepiece.model import load_checkpoint
    from onepiece.retrieval.index import load_item_index

    checked = refresh.check_window(config.refresh, start)
    _, manifest = load_item_index(config.item_index)
    snapshot = dt.datetime.fromisoformat(manifest["item_snapshot_as_of"])
    if snapshot > refresh.as_utc(start):
        raise UserError(
            f"the item index {config.item_index} holds item snapshots as of {snapshot.isoformat()}, after "
            f"T = {refresh.as_utc(start).isoformat()}: a backfill must not see a later catalogue; "
            "build an index as of T or earlier (`onepiece index build --as-of`)"
        )
    model = load_checkpoint(_checkpoint(config))
    if config.user_vectors == "triton" and not config.refresh.serving.urls:
        from onepiece.serving.user_tower import check_same_weights

        version = manifest["model"]["version"]
        if version is None:
            raise UserError(f"user_vectors triton: the item index {config.item_index} records no model version "
                            "to serve (publish one with `onepiece index publish`)")
        check_same_weights(config.serving, version, _checkpoint(config))
    shutil.rmtree(staging_root(config, start), ignore_errors=True)
    return checked | {"feature_service": model.config.feature_service, "index_items": manifest["items"]}


def _published_contexts(config: RetrievalRefreshConfig, start: dt.datetime, feature_service: str) -> Path | None:
    """The pre-rank refresh's published contexts of exactly this window and feature
    service (its scores manifest names the service), if any."""
    data, partition = Path(config.refresh.data), partition_of(start)
    directory, scores = data / "contexts" / partition, data / "scores" / partition / MANIFEST_NAME
    if not (directory / MANIFEST_NAME).is_file() or not scores.is_file():
        return None
    settings = json.loads(json.loads((directory / MANIFEST_NAME).read_text()).get("settings") or "{}")
    begin, end = refresh.as_utc(start), refresh.as_utc(start) + config.refresh.window
    same_window = settings.get("start") == begin.isoformat() and settings.get("end") == end.isoformat()
    same_service = (json.loads(scores.read_text()).get("model") or {}).get("feature_service") == feature_service
    return directory if same_window and same_service else None


def contexts(config: RetrievalRefreshConfig, start: dt.datetime, feature_service: str) -> dict[str, Any]:
    """Where the window's context rows are: the pre-rank refresh's, else built and staged."""
    published = _published_contexts(config, start, feature_service)
    if published is not None:
        return {"path": str(published), "built": False}
    out = staging_root(config, start) / "contexts"
    manifest = refresh.build_contexts(config.refresh, start, out, feature_service)
    return {"path": str(out), "built": True, "rows": manifest["rows"]}


def retrieve(config: RetrievalRefreshConfig, start: dt.datetime, contexts_path: str) -> dict[str, Any]:
    """The route over the window's contexts, staged with its manifest."""
    from onepiece.retrieval.route import RouteConfig, run_route

    out = staging_root(config, start) / RETRIEVAL_TABLE
    route = RouteConfig(top_n=config.top_n, user_vectors=config.user_vectors)
    manifest = run_route(contexts_path, config.item_index, out, route, _checkpoint(config), config.serving)
    if manifest["partition"] != partition_of(start):
        raise UserError(f"the contexts {contexts_path} are as of {manifest['partition']}, not {partition_of(start)}")
    return {"rows": manifest["rows"], "run_id": manifest["run_id"], "defaulted": manifest["defaulted"]}


def guard(config: RetrievalRefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """The route's publish guard on the staged partition; the verdict goes into its
    manifest, a refusal copies it to ``_refused/retrieval_refresh/<partition>/``."""
    from onepiece.pipeline.guard import GuardRefused, evaluate_route, refusal_message, verdict, write_verdict

    partition = partition_of(start)
    staged = staging_root(config, start) / RETRIEVAL_TABLE
    rows = storage.read_partition(staged, RETRIEVAL_TABLE)
    manifest_path = staged / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    checks = evaluate_route(config.guard, rows, int(manifest["rows"]["requests"]), config.top_n)
    document = verdict(config.guard, checks)
    manifest["guard"] = json.dumps(document, sort_keys=True)
    storage.write_json_atomic(manifest, manifest_path)
    if not document["passed"] and not document["forced"]:
        refused = Path(config.refresh.data) / "_refused" / "retrieval_refresh" / partition
        with storage.staged_dir(refused) as out:
            write_verdict(document, out)
        raise GuardRefused(refusal_message(partition, checks, refused, RETRIEVAL_TABLE))
    return {"passed": document["passed"], "forced": document["forced"], "failed": document["failed"]}


def publish(config: RetrievalRefreshConfig, start: dt.datetime) -> dict[str, Any]:
    """Move the staged partition into ``retrieval/<partition>`` in one rename."""
    partition = partition_of(start)
    staged = staging_root(config, start) / RETRIEVAL_TABLE
    if not (staged / MANIFEST_NAME).is_file():
        raise UserError(f"nothing to publish: {staged} holds no retrieval partition")
    rows = storage.read_partition(staged, RETRIEVAL_TABLE)
    final = Path(config.refresh.data) / RETRIEVAL_TABLE / partition
    storage.publish_dir(staged, final)
    shutil.rmtree(staging_root(config, start), ignore_errors=True)
    return {"partition": partition, "path": str(final), "rows": rows.num_rows}
