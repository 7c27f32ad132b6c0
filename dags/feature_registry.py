"""feature_registry: update the Feast registry from ``features/`` and materialise it.

    plan -> validate -> apply -> materialize

``plan`` shows Feast's registry and infrastructure diffs; ``validate`` checks every
source against the data contract and refuses a change that breaks a feature service in
use (removing or retyping a feature a model was trained with): the run fails there and
the registry stays as it was. ``apply`` updates the registry and the
``onepiece_feature_registry`` Asset that the refresh DAG reads; ``materialize`` loads the
online store up to the run's logical date.

Scheduled daily by default (``$ONEPIECE_REGISTRY_SCHEDULE``); trigger it after a change to
``features/`` (CI, or ``airflow dags trigger feature_registry``). Each task body is one
call into ``onepiece.pipeline.registry``.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, Param, dag, task

from onepiece.pipeline.config import task_retry_args

FEATURE_REGISTRY = Asset(name="onepiece_feature_registry")


def _config(context):
    from onepiece.pipeline.config import RegistryConfig

    return RegistryConfig.from_params(context["params"])


@dag(
    dag_id="feature_registry",
    schedule=os.environ.get("ONEPIECE_REGISTRY_SCHEDULE", "@daily"),
    start_date=dt.datetime.fromisoformat(
        os.environ.get("ONEPIECE_REFRESH_START", "2026-11-01T00:00:00+00:00")
    ),
    catchup=False,
    max_active_runs=1,  # Feast's file registry takes no concurrent writers
    default_args=task_retry_args(),
    tags=["onepiece"],
    params={
        "data": Param("", type="string", description="Data root; empty: $ONEPIECE_DATA, else ./data."),
        "feature_repo": Param("", type="string", description="Feast repository; empty: $ONEPIECE_FEATURE_REPO, else features/."),
    },
    doc_md=__doc__,
)
def feature_registry():
    @task
    def plan(**context) -> dict:
        from onepiece.pipeline import registry

        return registry.plan(_config(context))

    @task(retries=0)  # a refused change does not heal by retrying
    def validate(planned: dict, **context) -> dict:
        from onepiece.pipeline import registry

        return registry.validate(_config(context))

    @task(outlets=[FEATURE_REGISTRY])
    def apply(validated: dict, **context) -> dict:
        from onepiece.pipeline import registry

        return registry.apply(_config(context))

    @task
    def materialize(applied: dict, **context) -> dict:
        from onepiece.pipeline import registry

        return registry.materialize(_config(context), context["logical_date"])

    materialize(apply(validate(plan())))


feature_registry()
