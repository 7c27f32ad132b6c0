"""The retrieval route: an ANN index over a retrieval checkpoint's item vectors
(``index``), the batch route that turns context rows into top-N candidates (``route``)
and the merge of those into the upstream candidates for the pre-ranker (``merge``).

Imports the model and the contract; nothing here imports Beam, Feast or Airflow.
"""
