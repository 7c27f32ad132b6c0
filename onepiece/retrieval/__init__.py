"""The retrieval route: an ANN index over a retrieval checkpoint's item vectors
(``index``) and the batch route that turns context rows into top-N candidates (``route``).

Imports the model and the contract; nothing here imports Beam, Feast or Airflow.
"""
