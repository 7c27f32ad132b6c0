"""Output heads: per-task ranking logits per step, and retrieval user vectors.

All heads return logits per task shaped (B, C, S): candidate slot x output step
(S = K + 1, step 0 is B_0). Every task head runs at every step; which step supervises
(and is read by ``score()``) is ``ModelConfig.task_steps()``. ``score()`` asks the block
ranking head for each task at that step only (``at_steps``), the same logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onepiece.contract.schemas import TASKS
from onepiece.model.config import ModelConfig


class MultiTaskMLP(nn.Module):
    """One two-layer MLP per task, computed together (one GEMM for all first layers)."""

    def __init__(self, d_in: int, d_hidden: int, tasks: tuple[str, ...] = TASKS) -> None:
        super().__init__()
        self.tasks = tasks
        self.d_hidden = d_hidden
        self.hidden = nn.Linear(d_in, len(tasks) * d_hidden)
        self.act = nn.GELU()
        self.out_weight = nn.Parameter(torch.empty(len(tasks), d_hidden))
        self.out_bias = nn.Parameter(torch.zeros(len(tasks)))
        nn.init.uniform_(self.out_weight, -(d_hidden**-0.5), d_hidden**-0.5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # x (..., d_in) -> task -> (...)
        h = self.act(self.hidden(x))  # (..., T * d_hidden)
        h = h.view(*h.shape[:-1], len(self.tasks), self.d_hidden)  # (..., T, d_hidden)
        logits = (h * self.out_weight).sum(-1) + self.out_bias  # (..., T)
        return {task: logits[..., i] for i, task in enumerate(self.tasks)}

    def at_steps(self, x: torch.Tensor, steps: dict[str, int]) -> dict[str, torch.Tensor]:
        """Each task's logits at its one step: x (..., S, d_in) -> task -> (...), equal to
        ``forward(x)[task][..., steps[task]]`` without the task MLPs of unread steps.
        Consecutive tasks read at the same step share one GEMM (weight slices, no copy)."""
        out: dict[str, torch.Tensor] = {}
        first, dh = 0, self.d_hidden
        while first < len(self.tasks):
            step, stop = steps[self.tasks[first]], first + 1
            while stop < len(self.tasks) and steps[self.tasks[stop]] == step:
                stop += 1
            hidden = slice(first * dh, stop * dh)
            h = self.act(F.linear(x[..., step, :], self.hidden.weight[hidden], self.hidden.bias[hidden]))
            h = h.view(*h.shape[:-1], stop - first, dh)
            logits = (h * self.out_weight[first:stop]).sum(-1) + self.out_bias[first:stop]
            out |= {self.tasks[i]: logits[..., i - first] for i in range(first, stop)}
            first = stop
        return out


class BlockRankingHead(nn.Module):
    """onePiece ranking: candidate i's hidden state h_{i,k} -> per-task logit s_{i,k}.

    With ``head_reads_sd`` the MLP also reads the SD input tokens ``sd`` (B, N_SD, d),
    the same for every candidate and step of a sequence.
    """

    def __init__(self, config: ModelConfig, n_sd: int) -> None:
        super().__init__()
        d = config.d_model
        self.norm = nn.LayerNorm(d)
        self.sd_norm = nn.LayerNorm(n_sd * d) if config.head_reads_sd else None
        self.tasks = MultiTaskMLP(d + (n_sd * d if config.head_reads_sd else 0), d)

    def _inputs(self, blocks: torch.Tensor, sd: torch.Tensor | None) -> torch.Tensor:
        h = self.norm(blocks)  # (B, C, S, d)
        if self.sd_norm is None:
            return h
        assert sd is not None, "head_reads_sd: pass the SD tokens"
        request = self.sd_norm(sd.flatten(1))[:, None, None]  # (B, 1, 1, N_SD * d)
        return torch.cat([h, request.expand(*h.shape[:-1], -1)], dim=-1)

    def forward(self, blocks: torch.Tensor, sd: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.tasks(self._inputs(blocks, sd))  # (B, C, S, d) -> task -> (B, C, S)

    def at_steps(
        self, blocks: torch.Tensor, steps: dict[str, int], sd: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Each task's logits at its step only: (B, C, S, d) -> task -> (B, C)."""
        return self.tasks.at_steps(self._inputs(blocks, sd), steps)


class UserStateHead(nn.Module):
    """ReaRec-style: per-step user state u_k against candidate vectors z_i by an MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)
        self.tasks = MultiTaskMLP(3 * config.d_model, config.d_model)

    def forward(self, user: torch.Tensor, cands: torch.Tensor) -> dict[str, torch.Tensor]:
        # user (B, S, d), cands (B, C, d)
        u = self.norm(user)[:, None]  # (B, 1, S, d)
        z = cands[:, :, None].expand(-1, -1, u.shape[2], -1)  # (B, C, S, d)
        pair = torch.cat([u.expand_as(z), z, u * z], dim=-1)  # (B, C, S, 3d)
        return self.tasks(pair)  # task -> (B, C, S)


class RetrievalHead(nn.Module):
    """r_k = mean(LN(B_k)); logit = <r_k, z_v> for every task (tasks differ by step)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(config.d_model)

    def user_vectors(self, blocks: torch.Tensor) -> torch.Tensor:
        # blocks (B, M, S, d) -> r (B, S, d)
        return self.norm(blocks).mean(dim=1)

    def forward(self, user: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        # user r (B, S, d), items z (B, C, d) -> (B, C, S)
        logits = torch.einsum("bsd,bcd->bcs", user, items)
        return {task: logits for task in TASKS}


class WideTerm(nn.Module):
    """A linear term per task over the candidate's and the query's numeric inputs, added
    to every step's logit (``ModelConfig.wide_numerics``; the "wide" part of wide & deep,
    Cheng et al. 2016). Zero at init: training starts from the deep model alone."""

    def __init__(self, n_in: int, tasks: tuple[str, ...] = TASKS) -> None:
        super().__init__()
        self.tasks = tasks
        self.linear = nn.Linear(n_in, len(tasks), bias=False)
        nn.init.zeros_(self.linear.weight)

    def forward(self, logits: dict[str, torch.Tensor], numerics: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits task -> (B, C) or (B, C, S); numerics (B, C, n_in)."""
        w = self.linear(numerics.to(self.linear.weight.dtype))  # (B, C, T)
        out = dict(logits)
        for i, task in enumerate(self.tasks):
            if task in out:
                term = w[..., i]
                out[task] = out[task] + (term if out[task].dim() == 2 else term[..., None]).to(out[task].dtype)
        return out
