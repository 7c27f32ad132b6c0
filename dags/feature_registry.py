"""feature_registry: keep the Feast registry in step with ``features/`` and materialise.

    definitions_changed ─> plan ─> validate ─> apply ─> materialize
                   (short circuit)                     (runs either way)

``definitions_changed`` fingerprints the feature repository's definitions and compares
them with those of the last successful apply over the data root; when they match it
short-circuits, so plan/validate/apply are skipped (no Asset update), while
``materialize`` still runs (trigger rule none_failed): the online store keeps up with
new days on every run. The ``force`` Param runs the full path anyway.

``plan`` shows Feast's registry and infrastructure diffs; ``validate`` checks every
source against the data contract and refuses a change that breaks a feature service in
use (removing or retyping a feature a model was trained with): the run fails there and
the registry stays as it was (``force`` does not override this). ``apply`` updates the
registry, records the fingerprint it applied, and updates the ``onepiece_feature_registry``
Asset that the refresh DAG reads; ``materialize`` loads the online store up to the run's
logical date.

Scheduled hourly by default (``$ONEPIECE_REGISTRY_SCHEDULE``; the check is cheap), so a
change to ``features/`` is applied within the hour; trigger it for an immediate update
(CI, or ``airflow dags trigger feature_registry``). Each task body is one call into
``onepiece.pipeline.registry``.
"""

from __future__ import annotations


from airflow.sdk import Asset, Param, dag, task

from onepiece.pipeline.config import scheduled_dag_args
from onepiece.pipeline.dag_params import shared_params

FEATURE_REGISTRY = Asset(name="onepiece_feature_registry")


def _config(context):
    from onepiece.pipeline.config import RegistryConfig

    return RegistryConfig.from_params(context["params"])


@dag(
    dag_id="feature_registry",
    **scheduled_dag_args("ONEPIECE_REGISTRY_SCHEDULE", "@hourly"),  # max_active_runs=1: Feast's file registry takes no concurrent writers
    params={
        **shared_params("data", "feature_repo"),
        "force": Param(False, type="boolean",
                       description="Plan, validate and apply even when features/ is unchanged (a breaking change is still refused)."),
    },
    doc_md=__doc__,
)
def feature_registry():
    # Skips only its direct downstream (plan); the rest follow their trigger rules.
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def definitions_changed(**context) -> bool:
        from onepiece.pipeline import registry

        return registry.definitions_changed(_config(context))

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

    # Skipped apply (definitions unchanged): materialise anyway; failed: don't.
    @task(trigger_rule="none_failed")
    def materialize(applied: dict | None, **context) -> dict:
        from onepiece.pipeline import registry

        return registry.materialize(_config(context), context["logical_date"])

    planned = plan()
    definitions_changed() >> planned
    materialize(apply(validate(planned)))


feature_registry()
