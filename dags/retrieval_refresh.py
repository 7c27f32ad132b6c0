"""retrieval_refresh: the onePiece retrieval route for one time window, a second
candidate source beside the upstream recall.

For a run at logical date T the DAG takes the requests of [T, T + window_minutes), their
contexts as of T (the pre-rank refresh's published ones for the same window, else built
by the Beam contexts job), computes each request's user vector with the retrieval model
and publishes its top-N items from the item index as ``retrieval/dt=YYYY-MM-DD/hour=HH/``:

    check_inputs ─> contexts ─> retrieve ─> guard ─> publish

The ``guard`` task refuses a partition that misses requests, is mostly short of top_n,
holds non-finite scores or gives every request the same list (``guard_*`` Params;
``force_publish`` publishes anyway and records it).

The item index (``onepiece index build --checkpoint CKPT --as-of T0``, built from item
snapshots no newer than any T it serves) is the ``item_index`` Param or
``$ONEPIECE_ITEM_INDEX``; the retrieval model is the index directory's parent unless
``retrieval_checkpoint`` says otherwise. User vectors are computed in the task, or with
``user_vectors`` "triton" by the served ``onepiece_user_tower`` version the index was
published with (``onepiece index publish``; ``model_repo``, ``triton_urls``); the rows
are the same. Every task body is one call into
``onepiece.pipeline.retrieval_refresh``; only ``publish`` writes outside the run's
staging root, so a failed run publishes nothing and a rerun writes the same bytes.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from onepiece.pipeline.config import scheduled_dag_args
from onepiece.pipeline.dag_params import route_guard_params, shared_params


def _config(context):
    from onepiece.pipeline.retrieval_refresh import RetrievalRefreshConfig

    return RetrievalRefreshConfig.from_params(context["params"])


@dag(
    dag_id="retrieval_refresh",
    **scheduled_dag_args("ONEPIECE_RETRIEVAL_SCHEDULE", "@hourly"),
    params={
        **shared_params("window_minutes", "data", "feature_repo", "model_repo", "triton_urls"),
        "item_index": Param("", type="string", description="Item index directory; empty: $ONEPIECE_ITEM_INDEX."),
        "retrieval_checkpoint": Param(
            "", type="string",
            description="Retrieval model; empty: $ONEPIECE_RETRIEVAL_CHECKPOINT, else the index's parent."),
        "top_n": Param(0, type="integer", minimum=0,
                       description="Items per request; 0: $ONEPIECE_RETRIEVAL_TOP_N, else 200."),
        "user_vectors": Param(
            "", type="string", enum=["", "inprocess", "triton"],
            description="Where user vectors are computed: inprocess, or triton (the index's version of the "
                        "served onepiece_user_tower); empty: $ONEPIECE_RETRIEVAL_USER_VECTORS, else inprocess."),
        **route_guard_params(),
    },
    doc_md=__doc__,
)
def retrieval_refresh():
    @task
    def check_inputs(**context) -> dict:
        from onepiece.pipeline import retrieval_refresh as route

        return route.check_inputs(_config(context), context["logical_date"])

    @task
    def contexts(inputs: dict, **context) -> dict:
        from onepiece.pipeline import retrieval_refresh as route

        return route.contexts(_config(context), context["logical_date"], inputs["feature_service"])

    @task
    def retrieve(rows: dict, **context) -> dict:
        from onepiece.pipeline import retrieval_refresh as route

        return route.retrieve(_config(context), context["logical_date"], rows["path"])

    # A refusal is a verdict on the staged run, not a transient failure: no retries.
    @task(retries=0)
    def guard(retrieved: dict, **context) -> dict:
        from onepiece.pipeline import retrieval_refresh as route

        return route.guard(_config(context), context["logical_date"])

    @task
    def publish(verdict: dict, **context) -> dict:
        from onepiece.pipeline import retrieval_refresh as route

        return route.publish(_config(context), context["logical_date"])

    publish(guard(retrieve(contexts(check_inputs()))))


retrieval_refresh()
