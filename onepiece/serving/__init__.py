"""Serving the onePiece ranker with NVIDIA Triton Inference Server.

- ``server``: launch the ``tritonserver`` binary bundled in the nvidia-pytriton wheel
  (``embedded_triton``), or point at an existing Triton fleet instead.
- ``export``: write a checkpoint into a Triton model repository and keep its
  ``config.pbtxt`` in line with the tensor contract.
- ``triton_model``: the Python-backend model (version independent) that every
  ``model_repo/onepiece_ranker/<N>/model.py`` re-exports.
- ``client``: gRPC client with sharding, failover, retries and a pre-flight check.
- ``user_tower``: the retrieval route's user vectors from the served
  ``onepiece_user_tower`` (a retrieval model: contexts in, user vectors out), on given
  servers or an embedded one.

- ``fusion`` / ``scoring``: the fused pre-rank score, ranks, score rows (pure Arrow).
- ``beam_scoring`` / ``score_job``: the Beam scoring job (a RemoteModelHandler subclass
  called per chunk, dead letters, atomic publish); beam_jobs/score_candidates.py
  and ``onepiece score`` run it.

Shared context between the candidate groups of a request: with the paper's mask the
context attends to the candidates of its group, so no per-request cache is exact. A model
trained with ``context_sees_candidates`` off (the ``onepiece_shared`` variant) has a
context blind to the candidates; ``onepiece.model`` then encodes each request's context
once and scores all its groups against it (``ModelInputs.group_context``,
``benchmarks/shared_context.py``).

The served tensor layout follows the checkpoint (``onepiece.model.inputs.layout_of``):

- ``per_group`` (the paper's mask, the product default): one batch element is one
  sequence, a request's context plus one group of at most C candidates; the client
  repeats the context for every group.
- ``shared_context``: one batch element is a bundle of whole requests, each context once
  (R rows), all their candidate groups (G rows) and ``group_context`` [G], the context
  row of each group. Triton needs every input of a request to share the batch dim, so R
  and G are inner dims of a batch-1 request and every input is ragged
  (``allow_ragged_batch``): the dynamic batcher merges bundles of any size, the Python
  backend concatenates them (``ModelInputs.from_bundles``) and runs one ``score()``.
  ``max_batch_size`` counts bundles; ``groups_per_request`` (a config.pbtxt parameter)
  is the bundle size clients aim for.

``export`` writes the layout of the checkpoint, the client's preflight refuses a served
layout other than the one the checkpoint needs, and the Beam job and the refresh send
whatever the served layout is (same rows, same dead letters, failover and publish).

Submodules are imported on demand: this package imports nothing heavy.
"""
