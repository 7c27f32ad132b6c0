"""The onePiece model and its baselines behind one module, plus ``score()``.

``OnePiece(config)`` builds what the config says:

* transformer + block reasoning, ranking: sequence [IH | PA | SD | CIS]; the block is the
  C candidate positions (onePiece, HSTU with ``causal`` + invisible candidates + K = 0);
* transformer + block reasoning, retrieval: sequence [IH | PA | SD]; the block is the SD
  tokens; candidates are scored by <r_k, z_v> with item-adapter vectors;
* transformer + last-token reasoning (ReaRec): sequence [IH | PA | SD]; the last valid
  context token is fed back K times; candidates scored by an MLP against each u_k;
* dlrm: DLRM (dot-product interactions, DIN target attention over the IH), one step.

The forward returns per-task logits (B, C, S) for every step and never a loss; training
picks steps with ``config.task_steps()`` (see ``losses``). No Python loop runs per
candidate or per token; the only loop is over the K reasoning steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from onepiece.contract.schemas import TASKS
from onepiece.model import calibration
from onepiece.model.allocator import retain_freed_memory
from onepiece.model.backbone import KVCache
from onepiece.model.config import ModelConfig
from onepiece.model.dlrm import DLRMCore
from onepiece.model.heads import BlockRankingHead, RetrievalHead, UserStateHead, WideTerm
from onepiece.model.inputs import N_CAND_SET, N_ITEM_NUM, N_QUERY_NUM, ModelInputs
from onepiece.model.matches import n_match
from onepiece.model.masks import SEG_SD, Roles
from onepiece.model.reasoning import BlockSpec, Reasoner
from onepiece.model.sequence import N_SD, Context, ContextEncoder
from onepiece.model.tokens import HashedEmbedding


@dataclass
class SharedContext:
    """R contexts encoded once: every layer's keys and values, the contexts' roles, and
    the SD input tokens for a head that reads them (``head_reads_sd``)."""

    cache: KVCache
    roles: Roles
    sd: torch.Tensor | None


@dataclass
class ModelOutput:
    logits: dict[str, torch.Tensor]  # task -> (B, C, S); (B, C) with ``task_steps``
    cand_valid: torch.Tensor  # (B, C) bool
    user_vectors: torch.Tensor | None = None  # retrieval r_k (B, S, d)
    item_vectors: torch.Tensor | None = None  # retrieval z_v of the candidates (B, C, d)


class OnePiece(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ContextEncoder(config)
        self.n_wide_cand = N_ITEM_NUM + (N_CAND_SET if config.candidate_set_features else 0)
        n_matches = n_match(config)
        self.wide = WideTerm(self.n_wide_cand + N_QUERY_NUM + n_matches) if config.wide_numerics else None
        if config.backbone == "dlrm":
            self.dlrm = DLRMCore(config)
            return
        self.reasoner = Reasoner(config)
        if config.mode == "retrieval":
            self.head: nn.Module = RetrievalHead(config)
        elif config.reasoning == "last_token":
            self.head = UserStateHead(config)
        else:
            self.head = BlockRankingHead(config, N_SD)

    @property
    def candidates_in_sequence(self) -> bool:
        c = self.config
        return c.backbone == "transformer" and c.mode == "ranking" and c.reasoning == "block"

    @property
    def shares_context(self) -> bool:
        """``ModelConfig.shares_context``: each request's context can be encoded once."""
        return self.config.shares_context

    def encode_contexts(self, x: ModelInputs, room: int) -> SharedContext:
        """Shared-context layout: each of x's R contexts through every layer once, with
        ``room`` cache positions for a group's candidates and reasoning blocks."""
        assert self.shares_context, f"{self.config.name}: the context sees the candidates"
        ctx = self.encoder(x, with_candidates=False)
        cache = self.reasoner.encode_context(ctx.tokens, ctx.roles, room)
        return SharedContext(cache, ctx.roles, self._sd_tokens(ctx))

    def score_groups(
        self,
        shared: SharedContext,
        x: ModelInputs,
        groups: slice | torch.Tensor = slice(None),
        task_steps: dict[str, int] | None = None,
    ) -> ModelOutput:
        """Shared-context layout: x's candidate groups ``groups`` against their contexts,
        encoded once in ``shared`` (``encode_contexts(x)``); logits as ``forward``'s."""
        cands = dataclasses.replace(
            x,
            cand_item_cat=x.cand_item_cat[groups],
            cand_item_num=x.cand_item_num[groups],
            cand_len=x.cand_len[groups],
        )
        assert x.group_context is not None
        group_context = x.group_context[groups]
        matches = self.encoder.match_stats(x, cands.cand_item_cat, cands.cand_item_num, group_context)
        tokens, cand_valid = self.encoder.candidate_tokens(cands, matches)
        blocks = self.reasoner.forward_groups(shared.cache, shared.roles, group_context, tokens, cand_valid)
        sd = None if shared.sd is None else shared.sd.index_select(0, group_context)
        assert isinstance(self.head, BlockRankingHead)
        logits = self.head(blocks, sd) if task_steps is None else self.head.at_steps(blocks, task_steps, sd)
        query_num = x.query_num.index_select(0, group_context)
        return ModelOutput(self._add_wide(logits, cands.cand_item_num, query_num, matches), cand_valid)

    def forward(
        self, x: ModelInputs, *, cached: bool = True, task_steps: dict[str, int] | None = None
    ) -> ModelOutput:
        """Per-task logits for every candidate slot at every step; ``cached=False`` runs
        the reasoning steps without the KV cache (the reference path). With ``task_steps``
        (``score()``) each task's logits are (B, C) at its step only, and the block ranking
        head computes only those. Inputs in the shared-context layout
        (``x.group_context``) give one row per group; a model that ``shares_context``
        encodes each context once (cached), any other runs ``x.sequences()``."""
        if self.training:
            self._resample_id_dropout()
        if x.group_context is not None:
            if self.shares_context and cached:
                room = x.cand_item_cat.shape[1] * (self.config.num_steps + 1)
                return self.score_groups(self.encode_contexts(x, room), x, task_steps=task_steps)
            x = x.sequences()
        if task_steps is None:
            return self._forward(x, cached)
        if self.candidates_in_sequence:
            ctx = self.encoder(x, with_candidates=True)
            blocks = self.reasoner(ctx.tokens, ctx.roles, self._block(ctx), cached=cached)
            assert isinstance(self.head, BlockRankingHead)
            logits = self.head.at_steps(blocks, task_steps, self._sd_tokens(ctx))
            return ModelOutput(self._add_wide(logits, x.cand_item_num, x.query_num, ctx.cand_matches), ctx.cand_valid)
        out = self._forward(x, cached)
        out.logits = {task: out.logits[task][..., step] for task, step in task_steps.items()}
        return out

    def encode_users(self, x: ModelInputs) -> torch.Tensor:
        """Retrieval: the user vectors r_k (B, S, d) of x's contexts, the ones ``forward``
        scores candidates with; reads no candidate (``ModelInputs.from_contexts`` inputs
        do). The user tower's one call: the route in-process and Triton both make it."""
        assert self.config.mode == "retrieval", f"{self.config.name}: user vectors need a retrieval model"
        ctx = self.encoder(x, with_candidates=False)
        blocks = self.reasoner(ctx.tokens, ctx.roles, self._block(ctx), cached=True)
        if isinstance(self.head, RetrievalHead) and self.config.reasoning == "block":
            return self.head.user_vectors(blocks)  # blocks (B, N_SD, S, d) -> (B, S, d)
        return blocks[:, 0]  # last-token reasoning: (B, S, d)

    def _forward(self, x: ModelInputs, cached: bool) -> ModelOutput:
        if self.config.backbone == "dlrm":
            cand_valid = torch.arange(x.cand_item_cat.shape[1], device=x.cand_len.device)[None] < x.cand_len
            matches = self.encoder.match_stats(x)
            logits = self.dlrm(self.encoder, x, matches)
            return ModelOutput(self._add_wide(logits, x.cand_item_num, x.query_num, matches), cand_valid)
        ctx = self.encoder(x, with_candidates=self.candidates_in_sequence)
        blocks = self.reasoner(ctx.tokens, ctx.roles, self._block(ctx), cached=cached)
        if self.candidates_in_sequence:
            logits = self.head(blocks, self._sd_tokens(ctx))  # blocks (B, C, S, d)
            return ModelOutput(self._add_wide(logits, x.cand_item_num, x.query_num, ctx.cand_matches), ctx.cand_valid)
        if isinstance(self.head, RetrievalHead) and self.config.reasoning == "block":
            user = self.head.user_vectors(blocks)  # (B, S, d)
            items = self.encoder.items(x.cand_item_cat, x.cand_item_num)  # (B, C, d)
            return ModelOutput(self.head(user, items), ctx.cand_valid, user, items)
        user = blocks[:, 0]  # last-token reasoning: (B, S, d)
        if self.config.mode == "retrieval":
            items = self.encoder.items(x.cand_item_cat, x.cand_item_num)
            return ModelOutput(self.head(user, items), ctx.cand_valid, user, items)
        matches = self.encoder.match_stats(x)
        cands = self.encoder.candidates(x.cand_item_cat, x.cand_item_num, matches)
        return ModelOutput(self._add_wide(self.head(user, cands), x.cand_item_num, x.query_num, matches), ctx.cand_valid)

    def _add_wide(
        self,
        logits: dict[str, torch.Tensor],
        cand_num: torch.Tensor,
        query_num: torch.Tensor,
        matches: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Ranking logits plus the wide term (``ModelConfig.wide_numerics``) over each
        candidate's numerics (B, C, n), its query's (B, N_QUERY_NUM) and, when the model
        reads them, its context-match statistics (B, C, n_match(config))."""
        if self.wide is None:
            return logits
        cand = cand_num[..., : self.n_wide_cand]
        parts = [cand, query_num[:, None].expand(*cand.shape[:2], query_num.shape[-1])]
        numerics = torch.cat(parts + ([] if matches is None else [matches.to(cand.dtype)]), dim=-1)
        return self.wide(logits, numerics)

    def _resample_id_dropout(self) -> None:
        """One draw of the dropped ids per training forward, shared by every lookup in it."""
        for module in self.modules():
            if isinstance(module, HashedEmbedding) and module.dropout > 0:
                module.resample_dropout()

    def _sd_tokens(self, ctx: Context) -> torch.Tensor | None:
        """The SD input tokens (B, N_SD, d) for a head that reads them (``head_reads_sd``)."""
        if not self.config.head_reads_sd:
            return None
        return ctx.tokens[:, ctx.roles.segment[0] == SEG_SD]

    def _block(self, ctx: Context) -> BlockSpec:
        roles = ctx.roles
        n, device = roles.length, roles.valid.device
        if self.candidates_in_sequence:  # the C candidate slots end the sequence
            c = ctx.cand_valid.shape[1]
            positions = torch.arange(n - c, n, device=device)[None]  # (1, C)
            return BlockSpec(positions, positions - (n - c), ctx.cand_valid)
        b = roles.valid.shape[0]
        if self.config.reasoning == "block":  # retrieval: the SD tokens end the sequence
            positions = torch.arange(n - N_SD, n, device=device)[None]  # (1, 2)
            return BlockSpec(
                positions, torch.full_like(positions, -1), torch.ones(b, N_SD, dtype=torch.bool, device=device)
            )
        # ReaRec: the last valid context token, one per sequence
        last = (roles.index * roles.valid).amax(dim=1, keepdim=True)  # (B, 1)
        return BlockSpec(
            last, torch.full((1, 1), -1, device=device), torch.ones(b, 1, dtype=torch.bool, device=device)
        )


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()  # CPU: float32


#: Sequences per forward inside score(): small chunks keep the (tokens x 4d) FFN
#: activations in cache; on this CPU 32 and 64 sequences cost the least CPU time per
#: candidate (8 and 256 cost 1.15x and 1.25x more; measured with ``allocator`` on).
#: In the shared-context layout: contexts encoded per forward.
SCORE_CHUNK = 32
#: Shared-context layout: candidate groups per forward against the encoded contexts (a
#: micro-batch: a 2,000-candidate request never needs one tensor for all its groups).
GROUP_CHUNK = 64


def score(
    model: OnePiece,
    inputs: ModelInputs,
    *,
    chunk_size: int = SCORE_CHUNK,
    group_chunk: int = GROUP_CHUNK,
    cached: bool = True,
    trim: bool = True,
) -> dict[str, torch.Tensor]:
    """Task probabilities per candidate slot: task name -> (B, C) float32, 0 at padding
    (B = the groups, one row each, in either layout).

    Each task is read from the step that supervises it (``config.task_steps()``). Runs
    under ``torch.inference_mode()`` in eval mode (the previous mode is restored), with
    bf16 autocast on CUDA and float32 on the CPU, in chunks of ``chunk_size`` sequences
    (0 = one forward; on a GPU pass a large chunk). Beam, Triton and the tests call this.
    On the CPU it first stops glibc returning freed activations to the OS (``allocator``).
    With ``trim`` the sequences are chunked in order of their lengths and each chunk's
    padded segments are cut to the chunk's longest real length first
    (``ModelInputs.length_order``, ``trim_padding``; the model is padding-invariant and
    sequences are scored independently, so the scores are the same) and the outputs are
    padded back to C and put back in the input order; ``trim=False`` is the reference.
    Each head's logit goes through the config's Platt map first (``config.calibration``;
    none: the raw head output).

    Inputs in the shared-context layout (``inputs.group_context``) scored by a model that
    ``shares_context`` (and ``cached``): each chunk of ``chunk_size`` contexts is encoded
    once, and its groups go against it in micro-batches of ``group_chunk``. Any other
    model scores ``inputs.sequences()``.
    """
    device = next(model.parameters()).device
    if device.type == "cpu":
        retain_freed_memory()
    if inputs.group_context is not None and not (model.shares_context and cached):
        inputs = inputs.sequences()
    steps = model.config.task_steps()
    shared = inputs.group_context is not None
    b, width = inputs.batch_size, inputs.cand_item_cat.shape[1]
    size = chunk_size if chunk_size > 0 else max(b, 1)
    order = inputs.length_order() if trim and (shared or b > size) else None
    probs = {task: torch.zeros(inputs.n_groups, width) for task in TASKS}
    calibrated = model.config.calibration

    def put(out: ModelOutput, rows: torch.Tensor | slice) -> None:
        cut = out.cand_valid.shape[1]  # candidate slots left after trimming
        for task in TASKS:
            logit = calibration.apply(out.logits[task].float(), calibrated.get(task))  # (g, C')
            probs[task][rows, :cut] = (torch.sigmoid(logit) * out.cand_valid).cpu()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), _autocast(device):
            for start in range(0, max(b, 1), size):
                stop = min(start + size, b)
                if shared:
                    rows = order[start:stop] if order is not None else torch.arange(start, stop)
                    chunk, groups = inputs.contexts(rows)
                    chunk = (chunk.trim_padding() if trim else chunk).to(device)
                    room = chunk.cand_item_cat.shape[1] * (model.config.num_steps + 1)
                    context = model.encode_contexts(chunk, room)
                    step = group_chunk if group_chunk > 0 else max(chunk.n_groups, 1)
                    for first in range(0, chunk.n_groups, step):
                        part = slice(first, first + step)
                        put(model.score_groups(context, chunk, part, steps), groups[part])
                    continue
                rows = order[start:stop] if order is not None else slice(start, stop)
                chunk = inputs.select(rows) if order is not None else inputs.rows(start, stop)
                if trim:
                    chunk = chunk.trim_padding()
                put(model(chunk.to(device), cached=cached, task_steps=steps), rows)
    finally:
        model.train(was_training)
    return probs
