"""The retrieval route: an ANN index over a retrieval checkpoint's item vectors
(``index``), the batch route that turns context rows into top-N candidates (``route``),
a retrieval version published as the served user tower with its index (``publish``),
the merge of those into the upstream candidates for the pre-ranker (``merge``), and the
share of a window's clicks and orders the route held beside the upstream's (``outcomes``).

Imports the model and the contract; nothing here imports Beam, Feast or Airflow.
"""
