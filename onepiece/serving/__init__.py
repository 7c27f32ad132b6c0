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

Shared context between the candidate groups of a request: with the paper's mask the
context attends to the candidates of its group, so no per-request cache is exact. A model
trained with ``context_sees_candidates`` off (the ``onepiece_shared`` variant) has a
context blind to the candidates; ``onepiece.model`` then encodes each request's context
once and scores all its groups against it in process (``ModelInputs.group_context``,
``benchmarks/shared_context.py``). The Triton tensor contract and the Beam scoring job
still send one sequence per group (issue 18's next slice).

Submodules are imported on demand: this package imports nothing heavy.
"""
