"""Serving the onePiece ranker with NVIDIA Triton Inference Server.

- ``server``: launch the ``tritonserver`` binary bundled in the nvidia-pytriton wheel
  (``embedded_triton``), or point at an existing Triton fleet instead.
- ``export``: write a checkpoint into a Triton model repository and keep its
  ``config.pbtxt`` in line with the tensor contract.
- ``triton_model``: the Python-backend model (version independent) that every
  ``model_repo/onepiece_ranker/<N>/model.py`` re-exports.
- ``client``: gRPC client with sharding, failover, retries and a pre-flight check.

- ``fusion`` / ``scoring``: the fused pre-rank score, ranks, score rows (pure Arrow).
- ``beam_scoring`` / ``score_job``: the Beam scoring job (RunInference with a
  RemoteModelHandler subclass, dead letters, atomic publish); beam_jobs/score_candidates.py
  and ``onepiece score`` run it.

Shared context between the candidate groups of a request (issue item 5) is NOT done, on
purpose: with the product mask (``candidates_visible``, the paper's best ranking setting)
context tokens attend to the candidates of their own group, so from the first layer on a
context's hidden states differ per group and no per-request cache is exact. Only the
"invisible candidates" ablation mask would allow computing the context once per request.
benchmarks/triton_scoring.py measures what it would be worth (a sequence with its
context against the same candidates without it) and reports the upper-bound speed-up.

Submodules are imported on demand: this package imports nothing heavy.
"""
