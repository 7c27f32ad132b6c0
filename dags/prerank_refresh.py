"""prerank_refresh: re-score the upstream recall candidates of one time window.

For a run at logical date T (the window start) the DAG scores the candidates requested
in [T, T + window_minutes) as of T, and publishes ``scores/dt=YYYY-MM-DD/hour=HH/``:

    check_inputs ─> merge_retrieval ──┐
                                      ├─> assemble_contexts ─> score ─> report ─> guard ─> publish ─> serving_table
    ensure_model_served ──────────────┘

With the ``merge_retrieval`` Param (off by default) the run scores the upstream candidates
merged with the retrieval route's published ``retrieval/<partition>/`` of the same window
(run ``retrieval_refresh`` for T first): every upstream candidate once, plus the route's
new items; each score row's ``recall_source`` says which, and the scores manifest's
``merge`` field holds the counts. A missing retrieval partition fails ``check_inputs``.

The ``guard`` task refuses a staged partition that fails a check (coverage, request
volume, defaulted side features, degenerate scores, drift, served vs in-process scores;
thresholds are the ``guard_*`` Params): the run fails, nothing is published, the serving
pointer stays, and the report is copied to ``<data>/_refused/prerank_refresh/``. The
``force_publish`` Param publishes anyway and records it in the manifest.

The schedule is a cron expression (``$ONEPIECE_REFRESH_SCHEDULE``, default hourly). Airflow
3 runs a cron schedule with CronTriggerTimetable, whose data interval is empty
(start == end == T), so the scoring window is explicit: a Param, 60 minutes by default.
A backfill (``airflow backfill create --dag-id prerank_refresh --from-date ... --to-date
... --max-active-runs 1``) runs the same tasks for each logical date and writes what the
scheduled run wrote. Airflow 3 runs it on the scheduler: the DAG must be unpaused, and the
scheduler, dag-processor and API server (Execution API) running, as under ``airflow
standalone``.

Side features come from Feast inside the context job. The Feast registry is an input
(the ``onepiece_feature_registry`` Asset, updated by the ``feature_registry`` DAG), and
so is the pinned model version (``onepiece_model_pin``, updated by ``model_publish``).
Every task body is one call into ``onepiece.pipeline.refresh``; configuration comes from
the Params below, then environment variables (onepiece/pipeline/config.py), then the
embedded defaults. Tasks retry on failure; only ``publish`` writes outside the run's
staging root, so a failed run publishes nothing.
"""

from __future__ import annotations


from airflow.sdk import Asset, Param, dag, task

from onepiece.pipeline.config import scheduled_dag_args
from onepiece.pipeline.dag_params import guard_params, shared_params

FEATURE_REGISTRY = Asset(name="onepiece_feature_registry")
MODEL_PIN = Asset(name="onepiece_model_pin")



def _config(context):
    from onepiece.pipeline.config import RefreshConfig

    return RefreshConfig.from_params(context["params"])


@dag(
    dag_id="prerank_refresh",
    **scheduled_dag_args("ONEPIECE_REFRESH_SCHEDULE", "@hourly"),
    params={
        **shared_params("window_minutes", "data", "model_repo", "triton_urls", "feature_repo", "merge_retrieval"),
        "model_version": Param(0, type="integer", minimum=0,
                               description="Model version to score with; 0: the pinned one."),
        "beam_runner": Param("", type="string", description="Beam runner; empty: $ONEPIECE_BEAM_RUNNER, else FnApiRunner."),
        "beam_args": Param("", type="string", description="Extra Beam flags; empty: $ONEPIECE_BEAM_ARGS."),
        **guard_params(),
    },
    doc_md=__doc__,
)
def prerank_refresh():
    @task(inlets=[FEATURE_REGISTRY])
    def check_inputs(**context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.check_inputs(_config(context), context["logical_date"])

    @task(inlets=[MODEL_PIN])
    def ensure_model_served(**context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.ensure_model_served(_config(context))

    @task
    def merge_retrieval(inputs: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.merge_retrieval(_config(context), context["logical_date"])

    @task
    def assemble_contexts(merged: dict, model: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.assemble_contexts(_config(context), context["logical_date"], model)

    @task
    def score(contexts: dict, model: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.score(_config(context), context["logical_date"], model)

    @task
    def report(scored: dict, inputs: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.report(_config(context), context["logical_date"], inputs)

    # A refusal is a verdict on the staged run, not a transient failure: no retries.
    @task(retries=0)
    def guard(quality: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.guard(_config(context), context["logical_date"])

    @task
    def publish(verdict: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.publish(_config(context), context["logical_date"])

    @task
    def serving_table(published: dict, **context) -> dict:
        from onepiece.pipeline import refresh

        return refresh.serving_table(_config(context), context["logical_date"])

    inputs = check_inputs()
    model = ensure_model_served()
    contexts = assemble_contexts(merge_retrieval(inputs), model)
    scored = score(contexts, model)
    serving_table(publish(guard(report(scored, inputs))))


prerank_refresh()
