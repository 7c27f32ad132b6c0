"""The refresh pipeline's glue: one function per Airflow task, called by ``dags/*.py``.

- ``config``: RefreshConfig / RegistryConfig / PublishConfig from Airflow Params and
  environment variables, with embedded defaults
- ``refresh``: check_inputs, ensure_model_served, merge_retrieval, assemble_contexts,
  score, report, guard, publish, serving_table (the ``prerank_refresh`` DAG)
- ``report``: the per-run quality report (distributions, coverage, drift)
- ``guard``: the publish guards' checks and thresholds (scores and retrieval partitions)
- ``retrieval_refresh``: check_inputs, contexts, retrieve, guard, publish (the
  ``retrieval_refresh`` DAG: the onePiece retrieval route)
- ``pin``: the pinned model version the refresh DAG scores with
- ``registry``: definitions_changed, plan, validate, apply, materialise (the
  ``feature_registry`` DAG)
- ``publish_model``: train, evaluate, gate, export, smoke-score, pin (``model_publish``)

Nothing here imports Airflow: the DAG files pass the run's logical date and Params in.
"""
