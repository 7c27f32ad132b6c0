"""Scores computed in this process from a loaded model, in the order the Triton client
returns them: the reference that served scores are checked against (model_publish's
smoke test, the refresh's publish guard)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def probabilities_in_process(model, contexts: pa.Table, max_sequences: int = 1024) -> dict[str, np.ndarray]:
    """``p_<task>`` per candidate, on the flattened ``cand_item_id`` order of ``contexts``."""
    from onepiece.model import score, tensorize
    from onepiece.serving.client import scatter_to_candidates
    from onepiece.serving.scoring import chunk_rows

    parts = []
    for chunk in chunk_rows(contexts, model.config.group_size, max_sequences):
        inputs = tensorize(chunk, model.config, fixed_shape=True)
        assert inputs.cand_flat_index is not None  # set by tensorize for context rows
        probs = {f"p_{t}": p.numpy() for t, p in score(model, inputs).items()}
        parts.append(scatter_to_candidates(probs, inputs.cand_flat_index.numpy(), chunk))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]} if parts else {}
