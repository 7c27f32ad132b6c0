"""One epoch of training batches: sampled candidates, random groups, tensors and labels.

Ranking: every request's sampled candidates (all exposed + a capped number of unexposed,
see ``groups``) are shuffled and cut into groups of C; a batch is ``batch_size`` groups
in random order. A model whose context never sees the candidates (``context_sees_candidates`` off) trains
on whole requests instead, in the shared-context layout: the same groups, each request's
context once per batch. (Models that share the context for other reasons, HSTU's causal
mask with invisible candidates, keep per-group batches so that their rows stay
comparable with earlier runs; they score through the shared layout all the same.) Retrieval: a request's sampled candidates form its pool (one sequence
per request, so the in-batch contrastive term never meets the same request twice); the
world's recall lists mix intent-matching items (same-category hard negatives) with noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from onepiece.contract import TASKS
from onepiece.model import ModelConfig, ModelInputs, tensorize
from onepiece.model.inputs import candidate_values, with_candidate_set_columns
from onepiece.training.config import TrainConfig
from onepiece.training.groups import sample_candidates, split_groups


@dataclass
class Batch:
    inputs: ModelInputs
    labels: dict[str, torch.Tensor]  # task -> (B, C) float32, 0 at padding
    #: Retrieval only, optional: (B, C) log probability of each candidate being drawn as
    #: an in-batch positive (``losses.clip_loss``'s sampling-bias correction).
    log_q: torch.Tensor | None = None


def _sequence_config(config: ModelConfig) -> ModelConfig:
    # Retrieval: the whole sampled pool in one sequence per request.
    return dataclasses.replace(config, group_size=0) if config.mode == "retrieval" else config


def epoch_batches(
    rows: pa.Table, model_config: ModelConfig, train_config: TrainConfig, epoch: int
) -> Iterator[Batch]:
    """The batches of one epoch; the same (seed, epoch) gives the same batches."""
    rng = np.random.default_rng([train_config.seed, epoch])
    rows = with_candidate_set_columns(rows)  # over the whole recall list, before sampling
    keep = sample_candidates(rows, rng, train_config.max_unexposed)
    longest = int(pc.max(pc.list_value_length(rows["cand_item_id"])).as_py() or 1)
    group_size = longest if model_config.mode == "retrieval" else (model_config.group_size or longest)
    config = _sequence_config(model_config)
    if config.mode == "ranking" and not config.context_sees_candidates:
        yield from _request_batches(rows, config, train_config, rng, keep, longest, group_size)
        return
    groups = split_groups(rows, group_size, rng, keep).table
    order = rng.permutation(groups.num_rows)
    for start in range(0, len(order), train_config.batch_size):
        sub = groups.take(pa.array(order[start : start + train_config.batch_size]))
        inputs = tensorize(sub, config)
        labels = {task: candidate_values(sub, f"label_{task}", inputs) for task in TASKS}
        yield Batch(inputs, labels)


def _request_batches(
    rows: pa.Table,
    config: ModelConfig,
    train_config: TrainConfig,
    rng: np.random.Generator,
    keep: np.ndarray,
    longest: int,
    group_size: int,
) -> Iterator[Batch]:
    """The shared-context layout's batches: whole requests in random order, each with its
    kept candidates shuffled and cut into groups of C by ``tensorize`` (the same groups
    as ``split_groups`` draws), about ``batch_size`` groups per batch; each request's
    context is tensorized and encoded once per batch."""
    requests = split_groups(rows, longest, rng, keep).table  # one row per request, shuffled
    if requests.num_rows == 0:
        return
    order = rng.permutation(requests.num_rows)
    n_groups = -(-_lengths(requests) // group_size)
    total = np.cumsum(n_groups[order])
    ends = np.unique(np.searchsorted(total, np.arange(train_config.batch_size, total[-1], train_config.batch_size)) + 1)
    for part in np.split(order, ends[ends < len(order)]):
        sub = requests.take(pa.array(part))
        inputs = tensorize(sub, config, shared_context=True)
        labels = {task: candidate_values(sub, f"label_{task}", inputs) for task in TASKS}
        yield Batch(inputs, labels)


def _lengths(rows: pa.Table) -> np.ndarray:
    return pc.list_value_length(rows["cand_item_id"]).to_numpy(zero_copy_only=False).astype(np.int64)


def batches_per_epoch(rows: pa.Table, model_config: ModelConfig, train_config: TrainConfig) -> int:
    """How many batches an epoch has (for the progress bar; sampling keeps group counts
    nearly constant, so this is exact for retrieval and an estimate for ranking)."""
    rng = np.random.default_rng([train_config.seed, 0])
    keep = sample_candidates(rows, rng, train_config.max_unexposed)
    if model_config.mode == "retrieval" or model_config.group_size == 0:
        n = rows.num_rows
    else:
        per_row = np.bincount(
            np.asarray(pc.list_parent_indices(rows["cand_item_id"]))[keep], minlength=rows.num_rows
        )
        n = int((-(-per_row // model_config.group_size)).sum())
    return -(-n // train_config.batch_size)
