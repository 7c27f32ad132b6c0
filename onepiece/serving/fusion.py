"""From task probabilities to one pre-rank score per candidate, and ranks per request.

The deployed pre-ranker's fusion (onepiece-model.md section 8)::

    score = alpha * p_ctr^a * p_ctcvr^b
          + beta  * p_ctr^a * p_ctcvr^b * price
          + gamma * p_ctr * ecpm

p_ctr is the click head. p_ctcvr is click-then-order: the order head when it predicts the
joint event (our training labels mark ordered candidates, so it does) or
p_click * p_order when it predicts order given click. ecpm is the advertising value of an
item; the data contract carries none, so the advertising term is not implemented (all
items are organic) rather than offered as a setting that cannot act. The coefficients
are business settings with safe defaults; every run records them in its manifest.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class FusionConfig:
    alpha: float = 1.0
    a: float = 1.0  # exponent of p_ctr
    b: float = 1.0  # exponent of p_ctcvr
    beta: float = 0.0  # weight of the GMV term (price)
    order_head_is_joint: bool = True  # the order head predicts click-and-order directly

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def fuse(
    p_click: np.ndarray,
    p_order: np.ndarray,
    price: np.ndarray,
    config: FusionConfig,
) -> np.ndarray:
    """The fused score per candidate (float32), vectorised over all candidates."""
    p_ctr = p_click.astype(np.float64)
    p_ctcvr = p_order.astype(np.float64) * (1.0 if config.order_head_is_joint else p_ctr)
    core = np.power(p_ctr, config.a) * np.power(p_ctcvr, config.b)
    score = config.alpha * core + config.beta * core * price.astype(np.float64)
    return score.astype(np.float32)


def rank_within_requests(request_id: pa.Array, score: np.ndarray, item_id: np.ndarray) -> np.ndarray:
    """Rank (1 = best, int32) of every candidate within its request, by descending score;
    ties broken by item_id so reruns rank identically."""
    codes = pc.dictionary_encode(request_id).indices.to_numpy(zero_copy_only=False)
    order = np.lexsort((item_id, -score.astype(np.float64), codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    ranks_sorted = np.arange(len(order)) - np.repeat(starts, sizes) + 1
    ranks = np.empty(len(order), np.int32)
    ranks[order] = ranks_sorted
    return ranks
