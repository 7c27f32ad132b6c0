"""HSTU's pointwise aggregated attention and its relative-position buckets (ops).

HSTU (Zhai et al. 2024, "Actions Speak Louder than Words") replaces softmax by

    A = SiLU(Q K^T * alpha + rab) / n,    out = A V,

masked by the same attention mask: a key's weight does not compete with the other keys',
so the output is a plain sum over the allowed keys. ``alpha`` = 1 / sqrt(dh), as in the
reference's later layers; ``rab`` is a learned relative attention bias (here over
relative-position buckets, ``position_buckets``, plus, with ``hstu_time_buckets``, one
over log buckets of the time between the query's and the key's events, ``time_buckets``,
as the reference's ``RelativeBucketedTimeAndPositionBasedBias``).

``n``: the reference divides by its padded maximum sequence length, a constant. Ours
divides each query row by the number of keys it may attend to (valid and allowed by the
mask): a constant tied to the padded width would change the scores when padding is cut
(``ModelInputs.trim_padding``), while the count is the same however the sequence is
padded, laid out or cached, and it splits exactly: the count over the context plus the
count over a group's own keys (``prefix_attention.attend_pointwise_with_prefix``). The
layer normalises A V per row right after (``backbone.HSTULayer``), which cancels any
per-row scalar up to LayerNorm's epsilon, so the choice keeps the activations at a
sane scale and otherwise matters little.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onepiece.model.masks import MASKED

#: Distances below this get a bucket each; longer ones share logarithmic buckets.
EXACT_DISTANCES = 8
#: Growth factor of the logarithmic buckets (as the reference's log-time buckets, 1/0.301).
LOG_STEP = 0.301


def position_buckets(distance: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Relative distance (query position - key position, any int shape) -> bucket in
    [0, 2 * n_buckets): distances 0..7 exactly, then floor(log(d / 8) / 0.301) + 8,
    clamped to n_buckets - 1; a negative distance (a key after the query, only in a
    bidirectional mask) uses the upper half of the table."""
    d = distance.abs()
    far = EXACT_DISTANCES + torch.floor(
        torch.log(d.clamp(min=EXACT_DISTANCES).float() / EXACT_DISTANCES) / LOG_STEP
    ).long()
    bucket = torch.where(d < EXACT_DISTANCES, d, far).clamp(max=n_buckets - 1)
    return bucket + n_buckets * (distance < 0).long()


def time_buckets(seconds: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Time between two tokens' events in seconds (any float shape) -> bucket in
    [0, n_buckets]: floor(ln(max(|dt|, 1)) / 0.301), clamped to n_buckets, as the
    reference's bucketisation (natural log; one bucket per factor e^0.301 = 1.35)."""
    return (torch.log(seconds.abs().clamp(min=1.0)) / LOG_STEP).long().clamp(0, n_buckets)


def allowed_keys(mask: torch.Tensor | None, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The additive mask (0 = attend, <= MASKED = not; ``masks.attention_mask``) as 1/0
    weights broadcastable to ``shape`` (B, h, n, N); None = every key."""
    if mask is None:
        return torch.ones((1, 1, 1, shape[-1]), dtype=dtype)
    return (mask > MASKED / 2).to(dtype)


def pointwise_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """q (B, h, n, dh), k and v (B, h, N, dh); ``mask`` additive, broadcastable to
    (B, 1, n, N), None = attend everywhere; ``bias`` (rab) broadcastable to (B, h, n, N)
    -> (B, h, n, dh). A row with no allowed key gives zeros."""
    scores = torch.matmul(q, k.transpose(2, 3)) * (q.shape[-1] ** -0.5)  # (B, h, n, N)
    if bias is not None:
        scores = scores + bias
    allowed = allowed_keys(mask, scores.shape, scores.dtype).to(scores.device)
    weights = F.silu(scores) * allowed
    count = allowed.sum(-1, keepdim=True).clamp(min=1.0)  # (., 1, n or 1, 1) keys per query row
    return torch.matmul(weights, v) / count

