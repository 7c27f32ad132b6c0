"""model_publish: train (or take) a model, gate it, export it, serve it, pin it.

    datasets -> train -> evaluate -> gate -> calibrate -> export -> smoke -> pin
    datasets -> retrieval (only with the ``retrieval`` Param)

The last day with candidates is held out: the new model and the serving (pinned) model are
evaluated on the same rows, and the new one is published only if its click AUC reaches
the serving one's plus ``min_gain``. ``calibrate`` fits a Platt map per task head on
refresh-style contexts of hours of the held-out day, labelled by what followed, and
writes it into a calibrated copy of the checkpoint's config. ``export`` writes that copy
as the next version into the model repository (a model of another tensor layout than the
loaded versions needs the ``layout_change`` Param ``replace``; ``datasets`` checks it
before anything runs), ``smoke`` loads it in Triton (embedded,
or ``load_model`` on the configured servers) and checks served scores against in-process
scores, and ``pin`` switches the version the ``prerank_refresh`` DAG scores with (the
``onepiece_model_pin`` Asset). With the ``retrieval`` Param, ``retrieval`` also trains
onepiece_retrieval on the same days and publishes it with its item index (items as of
the held-out day) as the next ``onepiece_user_tower`` version, which the
``retrieval_refresh`` DAG takes as ``item_index`` = ``<model_repo>/onepiece_user_tower/<N>/item_index``.

Not scheduled: trigger it (``airflow dags trigger model_publish -c '{...}'``) or run it
with ``airflow dags test``. Each task body is one call into
``onepiece.pipeline.publish_model``.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, Param, dag, task

from onepiece.pipeline.config import PRODUCT_VARIANT, task_retry_args
from onepiece.pipeline.dag_params import shared_params

MODEL_PIN = Asset(name="onepiece_model_pin")


def _config(context):
    from onepiece.pipeline.config import PublishConfig

    return PublishConfig.from_params(context["params"])


@dag(
    dag_id="model_publish",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # one new version at a time
    default_args=task_retry_args(),
    tags=["onepiece"],
    params={
        **shared_params("data", "model_repo", "triton_urls", "feature_repo"),
        "checkpoint": Param("", type="string", description="Checkpoint directory to publish; empty: train one."),
        "variant": Param(PRODUCT_VARIANT, type="string", description="Model variant to train."),
        "layout_change": Param("refuse", enum=["refuse", "replace"], description="A new version needing another tensor layout than the loaded versions (e.g. the first onepiece_invisible after onepiece ones): refuse before training, or replace (serve the new layout; older versions stay on disk, unloaded)."),
        "epochs": Param(4, type="integer", minimum=1),
        "batch_size": Param(64, type="integer", minimum=1),
        "train_days": Param(0, type="integer", minimum=0, description="Days with candidates before the held-out one to train on; 0: all."),
        "seed": Param(0, type="integer"),
        "min_gain": Param(0.0, type="number", description="Click-AUC margin over the serving model."),
        "max_eval_requests": Param(2000, type="integer", minimum=0, description="Held-out requests for early stopping and the gate; 0: all."),
        "calibration_hours": Param(4, type="integer", minimum=0, description="Hours of the held-out day to fit the heads' calibration on; 0: publish the raw heads."),
        "calibration_requests_per_hour": Param(500, type="integer", minimum=0, description="Requests sampled per calibration hour (seeded); 0: all."),
        "retrieval": Param(False, type="boolean", description="Also train onepiece_retrieval on the same days and publish it with its item index (as of the held-out day) as the next onepiece_user_tower version."),
        "attribution_hours": Param(0, type="integer", minimum=0, description="Outcomes counted this long after a window (calibration labels); 0: $ONEPIECE_AUDIT_ATTRIBUTION_HOURS, else 6."),
    },
    doc_md=__doc__,
)
def model_publish():
    @task
    def datasets(**context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.datasets(_config(context), context["run_id"])

    @task
    def train(sets: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.train(_config(context), context["run_id"], sets)

    @task
    def evaluate(trained: dict, sets: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.evaluate(_config(context), context["run_id"], trained["checkpoint"], sets)

    @task(retries=0)  # a model below the bar stays below it
    def gate(evaluation: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.gate(_config(context), evaluation)

    @task
    def calibrate(passed: dict, trained: dict, sets: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.calibrate(_config(context), context["run_id"], trained["checkpoint"], sets)

    @task
    def export(calibrated: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.export(_config(context), calibrated["checkpoint"])

    @task
    def smoke(exported: dict, calibrated: dict, sets: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.smoke(_config(context), calibrated["checkpoint"], exported["version"], sets)

    @task(outlets=[MODEL_PIN])
    def pin(smoked: dict, evaluation: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.pin(_config(context), smoked["version"], evaluation)

    @task
    def retrieval(sets: dict, **context) -> dict:
        from onepiece.pipeline import publish_model

        return publish_model.retrieval(_config(context), context["run_id"], sets)

    sets = datasets()
    retrieval(sets)
    trained = train(sets)
    evaluation = evaluate(trained, sets)
    calibrated = calibrate(gate(evaluation), trained, sets)
    exported = export(calibrated)
    pin(smoke(exported, calibrated, sets), evaluation)


model_publish()
