"""outcomes_audit: measure published pre-rank scores against what users did next.

    audit

At logical date T the DAG audits the ``prerank_refresh`` partition of
T - window - attribution (the newest run whose outcomes are all logged by T): AUC and
GAUC per task head, calibration (mean predicted against realised rate, a reliability
plot) and the share of clicks and orders the fused score kept in each request's top k;
when ``retrieval_refresh`` published the same partition, also the share of the window's
clicked and ordered items the route retrieved beside the upstream candidates' share
(reported absent otherwise, not an error).
It writes ``outcomes/dt=.../hour=.../`` (``outcomes.json``, ``reliability.png``) and
never touches the scores. Schedule: ``$ONEPIECE_AUDIT_SCHEDULE`` (default hourly, like
the refresh). The task body is one call into ``onepiece.pipeline.audit``.
"""

from __future__ import annotations


from airflow.sdk import Param, dag, task

from onepiece.pipeline.config import scheduled_dag_args
from onepiece.pipeline.dag_params import shared_params


@dag(
    dag_id="outcomes_audit",
    **scheduled_dag_args("ONEPIECE_AUDIT_SCHEDULE", "@hourly"),
    params={
        **shared_params("window_minutes", "data"),
        "attribution_hours": Param(0, type="integer", minimum=0,
                                   description="Hours after the window whose events count; 0: $ONEPIECE_AUDIT_ATTRIBUTION_HOURS, else 6."),
        "top_k": Param(0, type="integer", minimum=0, description="The pre-rank's cut per request; 0: 20."),
    },
    doc_md=__doc__,
)
def outcomes_audit():
    @task
    def audit(**context) -> dict:
        from onepiece.pipeline.audit import audit as audit_run
        from onepiece.pipeline.config import AuditConfig

        return audit_run(AuditConfig.from_params(context["params"]), context["logical_date"])

    audit()


outcomes_audit()
