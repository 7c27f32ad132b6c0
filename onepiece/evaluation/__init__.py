"""Evaluation: metrics, the metrics.json document, MovieLens-100k, ablation and reports."""
