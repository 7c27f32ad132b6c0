"""The tensor contract: how context rows become the model's padded input tensors.

``TENSOR_SPECS`` is the one list of model inputs (name -> dtype and per-sample shape, -1
for a variable dimension). Triton's ``config.pbtxt`` is generated from it, the Python
backend reads tensors by these names, and :class:`ModelInputs` holds exactly them.

Conventions (stable; other parts code against them):

* Batch-major. One sample is one *sequence*: a request's context plus one group of at
  most C candidates (``ModelConfig.group_size``; 0 puts all of a request's candidates in
  one sequence). A request's candidates are split into consecutive groups in their listed
  order (deterministic reruns); ``tensorize(..., shuffle_seed=s)`` shuffles them first
  inside each request, as the paper does for training.
* Categorical tensors (``*_cat``, ``query_pieces``) hold RAW ids as int64; the model hashes
  them into its tables. A negative id (the contract's default -1 for an unknown entity)
  goes to the out-of-vocabulary bucket; ``query_pieces`` uses -1 as padding.
* Numeric tensors (``*_num``) are float32 after FIXED transforms (no fitted statistics):
  ``log1p`` for price, sales and popularity; ``log1p(100 x) / log(101)`` for CTR and CVR
  (maps [0, 1] to [0, 1] but resolves the small rates that matter).
* Candidate-set numerics (ours, ``ModelConfig.candidate_set_features``): after the
  item statistics, ``cand_item_num`` carries ``CAND_SET_FEATURES``, each candidate's
  price against its request's candidates: log(price / the median price of all the
  request's candidates) and log(price / that median among the request's candidates of
  the same category), clipped to +-``SET_LOG_RATIO_CLIP``; 0 where a price is unknown.
  They describe the whole recall list, so they are computed over every candidate of the
  request before any grouping or sampling (``with_candidate_set_columns``; training
  carries them as list columns through its candidate sampling).
* Padding: each variable segment has a length tensor (``ih_len``, ``pa_len``,
  ``cand_len``, per-sample shape [1]); positions past the length are padding (ids -1,
  numbers 0) and are masked by the model. Scalars per sample have shape [1].
* IH keeps the user's most recent ``ih_max_len`` events, oldest first (as in the row).
  ``ih_age_days`` is each event's age at the request, (as_of - ih_ts) in days as a
  float: clamped at 0 (an event stamped after as_of), 0 for a null ts or a row whose
  ``ih_ts`` list is null (a source without event times), 0 at padding.
* PA: the tensorizer EMITS the BOS/EOS marker tokens. Each non-empty anchor group becomes
  BOS, its first ``pa_per_group`` items, EOS; groups follow the contract's PA_GROUPS order.
  ``pa_kind`` is 0 item / 1 BOS / 2 EOS, ``pa_group`` the group code, ``pa_pos`` the
  position inside the group (BOS = 0). An empty PA gives ``pa_len`` 0.
* Triton: ``served_inputs(layout)`` / ``served_outputs(layout)`` derive the served tensors
  from these specs. A model that does not share its context (``layout_of``) is served one
  sequence per batch element (``per_group``); one that does is served bundles of whole
  requests, each context once with its groups and their ``group_context`` index
  (``shared_context``; ``ModelInputs.bundle`` / ``from_bundles``). A retrieval model is
  served as a user tower (``user_tower``): the context tensors of one request per batch
  element (``tensorize_contexts``), its user vectors out (``USER_TOWER_OUTPUTS``).
* Query text: lower-cased, split on whitespace, each word hashed with 32-bit FNV-1a over
  its UTF-8 bytes (stable across processes, unlike ``hash()``), at most
  ``query_max_pieces`` pieces.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from onepiece.contract.schemas import (
    CONTEXTS_SCHEMA,
    ITEM_FEATURES,
    PA_GROUPS,
    QUERY_FEATURES,
    USER_FEATURES,
    FeatureSpec,
)
from onepiece.contract.validate import ContractError
from onepiece.model.config import ModelConfig

# ---------------------------------------------------------------------------
# Feature layout (derived from the contract; never re-spelled)
# ---------------------------------------------------------------------------

ITEM_CAT_FEATURES: Final = tuple(f for f in ITEM_FEATURES if f.categorical)
ITEM_NUM_FEATURES: Final = tuple(f for f in ITEM_FEATURES if not f.categorical)
USER_CAT_FEATURES: Final = tuple(f for f in USER_FEATURES if f.categorical)
QUERY_NUM_FEATURES: Final = tuple(
    f for f in QUERY_FEATURES if not f.categorical and not pa.types.is_string(f.type)
)
QUERY_TEXT_FEATURES: Final = tuple(f for f in QUERY_FEATURES if pa.types.is_string(f.type))

N_ITEM_CAT: Final = 1 + len(ITEM_CAT_FEATURES)  # item_id first
N_ITEM_NUM: Final = len(ITEM_NUM_FEATURES)
N_USER_CAT: Final = 1 + len(USER_CAT_FEATURES)  # user_id first
N_QUERY_NUM: Final = len(QUERY_NUM_FEATURES)
#: The candidate-set numerics (module docstring) and the list columns that carry them.
CAND_SET_FEATURES: Final = ("price_vs_request", "price_vs_category")
CAND_SET_COLUMNS: Final = tuple(f"cand_set_{name}" for name in CAND_SET_FEATURES)
N_CAND_SET: Final = len(CAND_SET_FEATURES)
SET_LOG_RATIO_CLIP: Final = 5.0

PA_ITEM, PA_BOS, PA_EOS = 0, 1, 2
N_PA_GROUPS: Final = len(PA_GROUPS)


def _log1p(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.maximum(x, 0.0))


def _rate(x: np.ndarray) -> np.ndarray:
    return np.log1p(100.0 * np.clip(x, 0.0, 1.0)) / math.log(101.0)


#: Fixed numeric transforms by feature name (see the module docstring).
NUMERIC_TRANSFORMS: Final = {
    "price": _log1p,
    "sales_30d": _log1p,
    "ctr_7d": _rate,
    "cvr_7d": _rate,
    "popularity_7d": _log1p,
}
_missing = {f.name for f in ITEM_NUM_FEATURES + QUERY_NUM_FEATURES} - set(NUMERIC_TRANSFORMS)
assert not _missing, f"numeric features without a transform: {sorted(_missing)}"

# ---------------------------------------------------------------------------
# The contract
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One model input: numpy dtype name and per-sample shape (-1 = variable)."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def triton_dtype(self) -> str:
        return {"int64": "TYPE_INT64", "float32": "TYPE_FP32"}[self.dtype]


_I64, _F32 = "int64", "float32"
TENSOR_SPECS: Final[dict[str, TensorSpec]] = {
    "user_cat": TensorSpec(_I64, (N_USER_CAT,)),  # user_id, age_bucket, gender, region_id
    "query_cat": TensorSpec(_I64, (1,)),  # query_id
    "query_pieces": TensorSpec(_I64, (-1,)),  # hashed word pieces, -1 = padding
    "query_num": TensorSpec(_F32, (N_QUERY_NUM,)),  # popularity_7d
    "ih_item_cat": TensorSpec(_I64, (-1, N_ITEM_CAT)),  # item_id, shop_id, category_id
    "ih_item_num": TensorSpec(_F32, (-1, N_ITEM_NUM)),  # price, ctr_7d, cvr_7d, sales_30d
    "ih_event_type": TensorSpec(_I64, (-1,)),  # contract EVENT_TYPE_CODE
    "ih_age_days": TensorSpec(_F32, (-1,)),  # days from the event to as_of, >= 0
    "ih_len": TensorSpec(_I64, (1,)),
    "pa_item_cat": TensorSpec(_I64, (-1, N_ITEM_CAT)),
    "pa_item_num": TensorSpec(_F32, (-1, N_ITEM_NUM)),
    "pa_kind": TensorSpec(_I64, (-1,)),  # 0 item, 1 BOS, 2 EOS
    "pa_group": TensorSpec(_I64, (-1,)),  # contract PA_GROUP_CODE
    "pa_pos": TensorSpec(_I64, (-1,)),  # position inside its group, BOS = 0
    "pa_len": TensorSpec(_I64, (1,)),
    "cand_item_cat": TensorSpec(_I64, (-1, N_ITEM_CAT)),
    # the item statistics, then the candidate-set numerics (CAND_SET_FEATURES)
    "cand_item_num": TensorSpec(_F32, (-1, N_ITEM_NUM + N_CAND_SET)),
    "cand_len": TensorSpec(_I64, (1,)),
}

#: Outputs of ``score()`` / the Triton model: one probability per candidate slot.
OUTPUT_SPECS: Final[dict[str, TensorSpec]] = {
    f"p_{task}": TensorSpec(_F32, (-1,)) for task in ("impression", "click", "add_to_cart", "order")
}


#: Output of the retrieval user tower (``user_tower`` layout): each context's user vectors
#: r_k at every step, (S, d) per batch element (``OnePiece.encode_users``).
USER_TOWER_OUTPUTS: Final[dict[str, TensorSpec]] = {"user_vectors": TensorSpec(_F32, (-1, -1))}


#: The layouts of a Triton request; ``onepiece export`` picks one from the checkpoint's
#: config (``layout_of``) and the client sends what the served model declares. The two
#: ranker layouts score candidates; ``user_tower`` (a retrieval model) takes one context
#: per batch element, no candidates, and returns its user vectors.
PER_GROUP: Final = "per_group"
SHARED_CONTEXT: Final = "shared_context"
USER_TOWER: Final = "user_tower"
LAYOUTS: Final = (PER_GROUP, SHARED_CONTEXT, USER_TOWER)


def layout_of(config: ModelConfig) -> str:
    """The served layout of a model: the user tower for a retrieval model (candidates are
    searched in the item index, not scored by the server); shared-context when each
    request's context can be encoded once (``ModelConfig.shares_context``), else one
    sequence per group."""
    if config.mode == "retrieval":
        return USER_TOWER
    return SHARED_CONTEXT if config.shares_context else PER_GROUP


def served_inputs(layout: str) -> dict[str, TensorSpec]:
    """The Triton inputs of a layout, per batch element (Triton prepends the batch dim).

    ``per_group``: one element is one sequence (``TENSOR_SPECS``). ``shared_context``: one
    element is a *bundle* of whole requests: every context tensor gains a leading dim of R
    contexts, every candidate tensor one of G groups, and ``group_context`` [G] is the
    context row (0..R-1, inside the bundle) of each group. R and G vary per bundle, so
    every input is ragged (``allow_ragged_batch``) and the batcher merges bundles of any
    size; the backend concatenates them (``ModelInputs.from_bundles``).
    """
    if layout == PER_GROUP:
        return dict(TENSOR_SPECS)
    if layout == USER_TOWER:
        return {name: TENSOR_SPECS[name] for name in CONTEXT_TENSORS}
    if layout != SHARED_CONTEXT:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    specs = {name: TensorSpec(s.dtype, (-1, *s.shape)) for name, s in TENSOR_SPECS.items()}
    return specs | {"group_context": TensorSpec(_I64, (-1,))}


def served_outputs(layout: str) -> dict[str, TensorSpec]:
    """The Triton outputs of a layout: per sequence [C]; per bundle [G, C]; per context
    of the user tower [S, d]."""
    if layout == PER_GROUP:
        return dict(OUTPUT_SPECS)
    if layout == USER_TOWER:
        return dict(USER_TOWER_OUTPUTS)
    served_inputs(layout)  # checks the name
    return {name: TensorSpec(s.dtype, (-1, *s.shape)) for name, s in OUTPUT_SPECS.items()}


@dataclass
class ModelInputs:
    """The model's input tensors (exactly TENSOR_SPECS) plus row bookkeeping.

    ``request_row`` [B] is the context row each sequence came from and
    ``cand_flat_index`` [B, C] the index of each candidate slot in the flattened
    ``cand_item_id`` lists of that table (-1 for padding): use it to put scores back on
    candidates and to gather per-candidate labels. Both are None for tensors that came
    from elsewhere (Triton).
    """

    user_cat: torch.Tensor
    query_cat: torch.Tensor
    query_pieces: torch.Tensor
    query_num: torch.Tensor
    ih_item_cat: torch.Tensor
    ih_item_num: torch.Tensor
    ih_event_type: torch.Tensor
    ih_age_days: torch.Tensor
    ih_len: torch.Tensor
    pa_item_cat: torch.Tensor
    pa_item_num: torch.Tensor
    pa_kind: torch.Tensor
    pa_group: torch.Tensor
    pa_pos: torch.Tensor
    pa_len: torch.Tensor
    cand_item_cat: torch.Tensor
    cand_item_num: torch.Tensor
    cand_len: torch.Tensor
    request_row: torch.Tensor | None = None
    cand_flat_index: torch.Tensor | None = None
    #: None: the per-sequence layout (every tensor has one row per sequence). Set: the
    #: shared-context layout: the context tensors (``CONTEXT_TENSORS``) have one row per
    #: request (R), the candidate tensors, ``request_row`` and ``cand_flat_index`` one row
    #: per candidate group (G), and ``group_context`` [G] int64 is the context row of
    #: each group. A model whose context never sees the candidates encodes each context
    #: once (``OnePiece``); ``sequences()`` gives the per-sequence layout of the same input.
    group_context: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Sequences in the per-sequence layout; contexts (requests) in the shared one."""
        return int(self.user_cat.shape[0])

    @property
    def n_groups(self) -> int:
        """Candidate groups (= sequences in the per-sequence layout)."""
        return int(self.cand_item_cat.shape[0])

    def sequences(self) -> ModelInputs:
        """The per-sequence layout: every group with its own copy of its context."""
        if self.group_context is None:
            return self
        index = self.group_context
        copies = {name: getattr(self, name).index_select(0, index) for name in CONTEXT_TENSORS}
        return dataclasses.replace(self, **copies, group_context=None)

    def contexts(self, rows: torch.Tensor) -> tuple[ModelInputs, torch.Tensor]:
        """Shared layout: the contexts ``rows`` [r] (in that order) with all their groups,
        and the indices of those groups in ``self`` (grouped by context, in ``rows``
        order; a group keeps its order within its context)."""
        assert self.group_context is not None, "contexts() is for the shared-context layout"
        new_row = torch.full((self.batch_size,), -1, dtype=torch.long, device=rows.device)
        new_row[rows] = torch.arange(len(rows), device=rows.device)
        of_group = new_row[self.group_context]
        groups = torch.nonzero(of_group >= 0).flatten()
        groups = groups[torch.argsort(of_group[groups], stable=True)]
        picked = {name: getattr(self, name).index_select(0, rows) for name in CONTEXT_TENSORS}
        for name in (*GROUP_TENSORS, "request_row", "cand_flat_index"):
            value = getattr(self, name)
            picked[name] = None if value is None else value.index_select(0, groups)
        return ModelInputs(**picked, group_context=of_group[groups]), groups

    def tensors(self) -> dict[str, torch.Tensor]:
        """The named input tensors, in TENSOR_SPECS order."""
        return {name: getattr(self, name) for name in TENSOR_SPECS}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ModelInputs:
        """Build from named tensors (e.g. a Triton request), checking names and dtypes."""
        _check_tensors(tensors, TENSOR_SPECS)
        return cls(**{name: tensors[name] for name in TENSOR_SPECS})

    @classmethod
    def from_contexts(cls, tensors: dict[str, torch.Tensor]) -> ModelInputs:
        """Contexts without candidates, from the named ``CONTEXT_TENSORS`` (a user tower
        request, ``served_inputs("user_tower")``): every candidate tensor has width 0."""
        _check_tensors(tensors, {name: TENSOR_SPECS[name] for name in CONTEXT_TENSORS})
        b, device = int(tensors["user_cat"].shape[0]), tensors["user_cat"].device
        empty = {
            name: torch.zeros((b, 0, *TENSOR_SPECS[name].shape[1:]), dtype=TENSOR_SPECS[name].torch_dtype,
                              device=device)
            for name in ("cand_item_cat", "cand_item_num")
        }
        no_candidates = torch.zeros((b, 1), dtype=torch.int64, device=device)
        return cls(**{name: tensors[name] for name in CONTEXT_TENSORS}, **empty, cand_len=no_candidates)

    def bundle(self) -> dict[str, torch.Tensor]:
        """Shared layout: the named tensors of one Triton request (``served_inputs``), a
        batch of one bundle: every tensor with a leading dim of 1, plus ``group_context``."""
        if self.group_context is None:
            raise ValueError("bundle() needs the shared-context layout (tensorize(..., shared_context=True))")
        tensors = self.tensors() | {"group_context": self.group_context}
        return {name: t.unsqueeze(0) for name, t in tensors.items()}

    @classmethod
    def from_bundles(cls, requests: list[dict[str, torch.Tensor]]) -> tuple[ModelInputs, list[tuple[int, int]]]:
        """Merge Triton requests in the shared layout (a batch of n bundles each, tensors
        [n, R, ...] / [n, G, ...]) into one shared-layout input: contexts and groups
        concatenated in order, ``group_context`` shifted to the merged context rows.
        Returns it with (n, G) of each request, to split the per-group outputs. Padded
        widths must agree across requests (``tensorize(..., fixed_shape=True)``)."""
        assert requests, "from_bundles() needs at least one request"
        parts: list[tuple[ModelInputs, torch.Tensor]] = []  # inputs, group_context
        sizes: list[tuple[int, int]] = []
        for tensors in requests:
            if "group_context" not in tensors:
                raise ValueError("model input 'group_context' missing (shared-context layout)")
            n, r = tensors["user_cat"].shape[:2]
            g = tensors["cand_len"].shape[1]
            flat = {name: t.flatten(0, 1) for name, t in tensors.items()}
            index = flat.pop("group_context")
            if index.dtype != torch.int64 or tuple(tensors["group_context"].shape) != (n, g):
                raise ValueError(f"model input 'group_context': got {index.dtype} "
                                 f"{tuple(tensors['group_context'].shape)}, expected int64 [{n}, {g}]")
            if index.numel() and (int(index.min()) < 0 or int(index.max()) >= r):
                raise ValueError(f"model input 'group_context': context rows must be in 0..{r - 1}")
            inputs = cls.from_tensors(flat)
            if inputs.n_groups != n * g:
                raise ValueError("candidate tensors disagree on the number of groups")
            # Bundle i of this request owns contexts i*R .. i*R+R-1.
            offsets = torch.arange(n, device=index.device).repeat_interleave(g) * r
            parts.append((inputs, index + offsets))
            sizes.append((int(n), int(g)))
        merged: dict[str, Any] = {
            name: torch.cat([getattr(p, name) for p, _ in parts]) for name in TENSOR_SPECS
        }
        shift, indices = 0, []
        for p, index in parts:
            indices.append(index + shift)
            shift += p.batch_size
        merged["group_context"] = torch.cat(indices)
        return cls(**merged), sizes

    def to(self, device: torch.device | str) -> ModelInputs:
        moved = {
            f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return ModelInputs(**moved)

    def select(self, rows: torch.Tensor | slice) -> ModelInputs:
        """The sequences ``rows`` (an index tensor, or a slice for views); per-sequence
        layout only (the shared layout selects with ``contexts()``)."""
        if self.group_context is not None:
            raise ValueError("select() needs the per-sequence layout: use contexts() or sequences()")
        picked = {
            f.name: (v[rows] if isinstance(v, torch.Tensor) else v)
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
        }
        return ModelInputs(**picked)

    def rows(self, start: int, stop: int) -> ModelInputs:
        """Sequences start..stop-1 as views (no copy)."""
        return self.select(slice(start, stop))

    def trim_padding(self) -> ModelInputs:
        """The same sequences with each padded segment cut (as a view) to the longest real
        length among them, at least 1: the columns cut are padding in every sequence.

        Requests arrive padded to fixed widths (``fixed_shape``), e.g. IH to 100 events
        when the mean is ~45; the model is padding-invariant, so ``score()`` trims each
        chunk and spends no compute on all-padding columns. ``cand_flat_index`` is cut with
        the candidates; callers pad per-slot outputs back to the original C.
        """
        cut: dict[str, Any] = {}
        for length, names in PADDED_SEGMENTS.items():
            lengths = getattr(self, length)
            width = getattr(self, names[0]).shape[1]
            longest = int(lengths.max()) if lengths.numel() else 0
            keep = min(max(longest, 1), width)
            if keep < width:
                for name in names:
                    value = getattr(self, name)
                    cut[name] = None if value is None else value[:, :keep]
        return dataclasses.replace(self, **cut) if cut else self

    def length_order(self) -> torch.Tensor:
        """A stable order of the sequences by IH length, then PA length: consecutive
        chunks of it have similar lengths, so ``trim_padding`` cuts each one further."""
        key = self.ih_len[:, 0] * (self.pa_item_cat.shape[1] + 1) + self.pa_len[:, 0]
        return torch.argsort(key, stable=True)


def _check_tensors(tensors: dict[str, torch.Tensor], specs: dict[str, TensorSpec]) -> None:
    """Every tensor of ``specs`` present with its dtype and rank (batch dim first)."""
    missing = [name for name in specs if name not in tensors]
    if missing:
        raise ValueError(f"model inputs missing: {missing}")
    for name, spec in specs.items():
        t = tensors[name]
        if t.dtype != spec.torch_dtype or t.dim() != len(spec.shape) + 1:
            raise ValueError(
                f"model input '{name}': got {t.dtype} {tuple(t.shape)}, "
                f"expected {spec.dtype} [batch, {', '.join(map(str, spec.shape))}]"
            )


#: The tensors of a request's context, and those of one candidate group.
GROUP_TENSORS: Final = ("cand_item_cat", "cand_item_num", "cand_len")
CONTEXT_TENSORS: Final = tuple(name for name in TENSOR_SPECS if name not in GROUP_TENSORS)

#: Each length tensor and the tensors it pads (along dim 1); ``trim_padding`` cuts them.
PADDED_SEGMENTS: Final[dict[str, tuple[str, ...]]] = {
    "ih_len": ("ih_item_cat", "ih_item_num", "ih_event_type", "ih_age_days"),
    "pa_len": ("pa_item_cat", "pa_item_num", "pa_kind", "pa_group", "pa_pos"),
    "cand_len": ("cand_item_cat", "cand_item_num", "cand_flat_index"),
}


# ---------------------------------------------------------------------------
# Arrow helpers (vectorised; no loop per row or token)
# ---------------------------------------------------------------------------


def _list_column(table: pa.Table, name: str) -> pa.ListArray:
    column = table.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _lengths(lists: pa.ListArray) -> np.ndarray:
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy(zero_copy_only=False).astype(
        np.int64
    )


def _flat_values(table: pa.Table, name: str, spec: FeatureSpec | None, dtype: str) -> np.ndarray:
    values = pc.list_flatten(_list_column(table, name))
    if spec is not None and values.null_count:
        values = pc.fill_null(values, pa.scalar(spec.default, values.type))
    return values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _scalar_values(table: pa.Table, name: str, spec: FeatureSpec, dtype: str) -> np.ndarray:
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column, pa.scalar(spec.default, column.type))
    return column.to_numpy().astype(dtype, copy=False)


def _transform(spec: FeatureSpec, values: np.ndarray) -> np.ndarray:
    return NUMERIC_TRANSFORMS[spec.name](values.astype(np.float64)).astype(np.float32)


def _fnv1a32(strings: pa.Array) -> np.ndarray:
    """32-bit FNV-1a of every string's UTF-8 bytes; vectorised over strings, loop over bytes."""
    strings = strings.cast(pa.string())
    if len(strings) == 0:
        return np.zeros(0, np.int64)
    offsets = np.frombuffer(strings.buffers()[1], np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ].astype(np.int64)
    data_buffer = strings.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(len(strings), 2166136261, np.uint64)
    for i in range(int(lengths.max(initial=0))):
        active = lengths > i
        byte = data[starts[active] + i].astype(np.uint64)
        h[active] = ((h[active] ^ byte) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF)
    return h.astype(np.int64)


def _ragged_columns(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For flat elements of ragged rows: (row index, column inside the row)."""
    rows = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return rows, np.arange(int(lengths.sum())) - np.repeat(starts, lengths)


def _scatter(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, ...], fill: float
) -> np.ndarray:
    out = np.full(shape + values.shape[1:], fill, dtype=values.dtype)
    out[rows, cols] = values
    return out


def _check_parallel(table: pa.Table, segment: str, names: list[str], source: str) -> np.ndarray:
    lengths = _lengths(_list_column(table, f"{segment}_item_id"))
    for name in names:
        other = _lengths(_list_column(table, name))
        bad = np.flatnonzero(other != lengths)
        if len(bad):
            raise ContractError(
                "contexts",
                source,
                f"list length {other[bad[0]]} differs from {segment}_item_id ({lengths[bad[0]]})",
                column=name,
                row=int(bad[0]),
            )
    return lengths


def _item_features(table: pa.Table, segment: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat item tokens of a segment: cat [T, N_ITEM_CAT] int64, num [T, N_ITEM_NUM] float32."""
    cat = [_flat_values(table, f"{segment}_item_id", None, "int64")]
    cat += [_flat_values(table, f"{segment}_{f.name}", f, "int64") for f in ITEM_CAT_FEATURES]
    num = [
        _transform(f, _flat_values(table, f"{segment}_{f.name}", f, "float64"))
        for f in ITEM_NUM_FEATURES
    ]
    return np.stack(cat, axis=1), np.stack(num, axis=1).astype(np.float32)


def _segment_names(segment: str) -> list[str]:
    return [f"{segment}_{f.name}" for f in ITEM_FEATURES]


# ---------------------------------------------------------------------------
# Segments
# ---------------------------------------------------------------------------


#: Event ages in the tensor contract are in days; timestamps are int64 microseconds.
SECONDS_PER_DAY: Final = 86_400
MICROS_PER_DAY: Final = SECONDS_PER_DAY * 1_000_000


def _micros(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """int64 microseconds since the epoch of a timestamp array (nulls kept)."""
    return pc.cast(pc.cast(values, pa.timestamp("us", tz=values.type.tz)), pa.int64())


def _ih_age_days(table: pa.Table, lengths: np.ndarray, rows: np.ndarray, source: str) -> np.ndarray:
    """[T] float32 age in days at as_of of every flat IH event (module docstring: >= 0, 0
    for a null ts; a null ``ih_ts`` list gives its row's events age 0)."""
    ts = _list_column(table, "ih_ts")
    present = ts.is_valid().to_numpy(zero_copy_only=False)
    other = _lengths(ts)
    bad = np.flatnonzero(present & (other != lengths))
    if len(bad):
        raise ContractError(
            "contexts", source, f"list length {other[bad[0]]} differs from ih_item_id ({lengths[bad[0]]})",
            column="ih_ts", row=int(bad[0]),
        )
    stamps = _micros(pc.list_flatten(ts))  # the events of the rows with a list, in order
    known = stamps.is_valid().to_numpy(zero_copy_only=False)
    stamps = pc.fill_null(stamps, 0).to_numpy(zero_copy_only=False)
    as_of = _micros(_list_column(table, "as_of")).to_numpy(zero_copy_only=False)
    age = np.zeros(len(rows), np.float64)
    listed = present[rows]
    age[listed] = np.where(known, (as_of[rows[listed]] - stamps) / MICROS_PER_DAY, 0.0)
    return np.maximum(age, 0.0).astype(np.float32)


def _ih(table: pa.Table, config: ModelConfig, width: int | None, source: str) -> dict:
    lengths = _check_parallel(
        table, "ih", _segment_names("ih") + ["ih_event_type"], source
    )
    cat, num = _item_features(table, "ih")
    event = pc.list_flatten(_list_column(table, "ih_event_type"))
    event = pc.fill_null(event, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows, cols = _ragged_columns(lengths)
    age = _ih_age_days(table, lengths, rows, source)
    kept = np.minimum(lengths, config.ih_max_len)
    # Keep the most recent events: drop the first (length - kept) of each row.
    drop = (lengths - kept)[rows]
    keep = cols >= drop
    rows, cols = rows[keep], cols[keep] - drop[keep]
    w = width or max(1, int(kept.max(initial=0)))
    shape = (len(lengths), w)
    return {
        "ih_item_cat": _scatter(rows, cols, cat[keep], shape, -1),
        "ih_item_num": _scatter(rows, cols, num[keep], shape, 0.0),
        "ih_event_type": _scatter(rows, cols, event[keep], shape, -1),
        "ih_age_days": _scatter(rows, cols, age[keep], shape, 0.0),
        "ih_len": kept[:, None],
    }


def _pa(table: pa.Table, config: ModelConfig, width: int | None, source: str) -> dict:
    lengths = _check_parallel(table, "pa", _segment_names("pa") + ["pa_group"], source)
    cat, num = _item_features(table, "pa")
    group = pc.list_flatten(_list_column(table, "pa_group"))
    group = pc.fill_null(group, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows, cols = _ragged_columns(lengths)
    bad = np.flatnonzero((group < 0) | (group >= N_PA_GROUPS))
    if len(bad):
        raise ContractError(
            "contexts", source, f"pa_group code {group[bad[0]]} is not in 0..{N_PA_GROUPS - 1}",
            column="pa_group", row=int(rows[bad[0]]),
        )
    # Order by (row, group), stable inside a group; then rank inside each (row, group).
    order = np.lexsort((cols, group, rows))
    rows, group, cat, num = rows[order], group[order], cat[order], num[order]
    key = rows * N_PA_GROUPS + group
    first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    rank = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)]))
    keep = rank < config.pa_per_group
    rows, group, cat, num, rank, key = (a[keep] for a in (rows, group, cat, num, rank, key))
    # Items per (row, group); a non-empty group takes count + 2 slots (BOS, items, EOS).
    n_rows = len(lengths)
    count = np.bincount(key, minlength=n_rows * N_PA_GROUPS).reshape(n_rows, N_PA_GROUPS)
    slots = np.where(count > 0, count + 2, 0)
    group_start = np.cumsum(slots, axis=1) - slots  # [R, G] first slot of each group
    total = slots.sum(axis=1)
    w = width or max(1, int(total.max(initial=0)))
    shape = (n_rows, w)
    item_cols = group_start[rows, group] + 1 + rank
    out = {
        "pa_item_cat": _scatter(rows, item_cols, cat, shape, -1),
        "pa_item_num": _scatter(rows, item_cols, num, shape, 0.0),
        "pa_kind": _scatter(rows, item_cols, np.full(len(rows), PA_ITEM), shape, PA_ITEM),
        "pa_group": _scatter(rows, item_cols, group, shape, 0),
        "pa_pos": _scatter(rows, item_cols, rank + 1, shape, 0),
        "pa_len": total[:, None],
    }
    # Marker tokens for every non-empty group.
    m_rows, m_groups = np.nonzero(count)
    bos = group_start[m_rows, m_groups]
    eos = bos + count[m_rows, m_groups] + 1
    for cols_, kind in ((bos, PA_BOS), (eos, PA_EOS)):
        out["pa_kind"][m_rows, cols_] = kind
        out["pa_group"][m_rows, cols_] = m_groups
        out["pa_pos"][m_rows, cols_] = cols_ - bos
    return out


def _sd(table: pa.Table, config: ModelConfig, width: int | None) -> dict:
    user = [table.column("user_id").to_numpy().astype(np.int64)]
    user += [_scalar_values(table, f"user_{f.name}", f, "int64") for f in USER_CAT_FEATURES]
    query_num = [
        _transform(f, _scalar_values(table, f"query_{f.name}", f, "float64"))
        for f in QUERY_NUM_FEATURES
    ]
    (text_spec,) = QUERY_TEXT_FEATURES
    text = pc.fill_null(table.column(f"query_{text_spec.name}"), "")
    words = pc.utf8_split_whitespace(pc.utf8_lower(text))
    words = words.combine_chunks() if isinstance(words, pa.ChunkedArray) else words
    flat = pc.list_flatten(words)
    # Empty strings (from an empty text or edge whitespace) are not pieces.
    nonempty = pc.greater(pc.binary_length(flat), 0).to_numpy(zero_copy_only=False)
    rows, _ = _ragged_columns(_lengths(words))
    rows, hashes = rows[nonempty], _fnv1a32(flat.filter(pa.array(nonempty)))
    lengths = np.bincount(rows, minlength=table.num_rows)
    _, cols = _ragged_columns(lengths)
    keep = cols < config.query_max_pieces
    w = width or max(1, int(np.minimum(lengths, config.query_max_pieces).max(initial=0)))
    return {
        "user_cat": np.stack(user, axis=1),
        "query_cat": table.column("query_id").to_numpy().astype(np.int64)[:, None],
        "query_pieces": _scatter(rows[keep], cols[keep], hashes[keep], (table.num_rows, w), -1),
        "query_num": np.stack(query_num, axis=1).astype(np.float32),
    }


def group_median(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """[n_groups] median of ``values`` per ``group`` id (0..n_groups-1); NaN where empty."""
    order = np.lexsort((values, group))
    v = values[order]
    counts = np.bincount(group, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.full(n_groups, np.nan)
    has = counts > 0
    low, high = starts + (counts - 1) // 2, starts + counts // 2
    out[has] = (v[low[has]] + v[high[has]]) / 2
    return out


def candidate_set_values(table: pa.Table) -> np.ndarray:
    """[n_flat, N_CAND_SET] float32 candidate-set numerics of every candidate of ``table``
    (one row per request, all its candidates), in flattened ``cand_item_id`` order."""
    spec = {f.name: f for f in ITEM_FEATURES}
    price = _flat_values(table, "cand_price", spec["price"], "float64")
    price = np.where(np.isfinite(price), price, 0.0)
    category = _flat_values(table, "cand_category_id", spec["category_id"], "int64")
    request = np.asarray(pc.list_parent_indices(_list_column(table, "cand_item_id")), dtype=np.int64)
    priced = price > 0
    by_request = group_median(request[priced], price[priced], table.num_rows)[request]
    keys, key_of = np.unique(np.stack([request, category], axis=1), axis=0, return_inverse=True)
    key_of = key_of.reshape(-1)
    by_category = group_median(key_of[priced], price[priced], len(keys))[key_of]
    out = np.zeros((len(price), N_CAND_SET), np.float32)
    for j, median in enumerate((by_request, by_category)):
        ok = priced & (median > 0)
        out[ok, j] = np.clip(np.log(price[ok] / median[ok]), -SET_LOG_RATIO_CLIP, SET_LOG_RATIO_CLIP)
    return out


def with_candidate_set_columns(table: pa.Table) -> pa.Table:
    """``table`` (one row per request, all its candidates) with the ``CAND_SET_COLUMNS``
    list columns; unchanged when it has them. Call it before cutting a request's candidates
    into groups or samples: the numerics describe the whole list."""
    if all(name in table.column_names for name in CAND_SET_COLUMNS):
        return table
    table = table.combine_chunks()
    values = candidate_set_values(table)
    offsets = _list_column(table, "cand_item_id").offsets
    for j, name in enumerate(CAND_SET_COLUMNS):
        column = pa.ListArray.from_arrays(offsets, pa.array(values[:, j]))
        table = table.drop_columns([name]) if name in table.column_names else table
        table = table.append_column(name, column)
    return table


def _candidate_groups(
    table: pa.Table, config: ModelConfig, fixed_shape: bool, shuffle_seed: int | None, source: str
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Split each request's candidates into sequences of at most C.

    Returns the candidate tensors, the context row of each sequence and the flat
    candidate index of each slot (-1 for padding).
    """
    table = with_candidate_set_columns(table)
    lengths = _check_parallel(table, "cand", _segment_names("cand") + list(CAND_SET_COLUMNS), source)
    cat, num = _item_features(table, "cand")
    set_values = [_flat_values(table, name, None, "float32") for name in CAND_SET_COLUMNS]
    num = np.concatenate([num, np.stack(set_values, axis=1)], axis=1)
    starts = np.cumsum(lengths) - lengths
    flat = np.arange(int(lengths.sum()))
    if shuffle_seed is not None:
        rows, _ = _ragged_columns(lengths)
        keys = np.random.default_rng(shuffle_seed).random(len(flat))
        flat = flat[np.lexsort((keys, rows))]  # shuffled inside each request
    c = config.group_size or max(1, int(lengths.max(initial=0)))
    n_groups = -(-lengths // c)  # ceil; a request without candidates has no sequence
    request_row = np.repeat(np.arange(len(lengths)), n_groups)
    group_start = (np.arange(int(n_groups.sum())) - np.repeat(np.cumsum(n_groups) - n_groups, n_groups)) * c
    group_len = np.minimum(c, lengths[request_row] - group_start)
    width = c if (fixed_shape or config.group_size == 0) else max(1, int(group_len.max(initial=0)))
    slot = np.arange(width)[None, :]
    valid = slot < group_len[:, None]
    position = np.where(valid, starts[request_row][:, None] + group_start[:, None] + slot, 0)
    flat_index = np.full(valid.shape, -1, np.int64)
    flat_index[valid] = flat[position[valid]]
    cand_cat = np.full(valid.shape + (N_ITEM_CAT,), -1, np.int64)
    cand_num = np.zeros(valid.shape + (N_ITEM_NUM + N_CAND_SET,), np.float32)
    cand_cat[valid], cand_num[valid] = cat[flat_index[valid]], num[flat_index[valid]]
    tensors = {"cand_item_cat": cand_cat, "cand_item_num": cand_num, "cand_len": group_len[:, None]}
    return tensors, request_row, flat_index


def _context_arrays(contexts: pa.Table, config: ModelConfig, fixed_shape: bool, source: str) -> dict:
    """The context tensors (SD, IH, PA) of every row as numpy arrays, padded to the
    longest in ``contexts`` or, with ``fixed_shape``, to the configured maxima."""
    widths = {
        "ih": config.ih_max_len if fixed_shape else None,
        "pa": N_PA_GROUPS * (config.pa_per_group + 2) if fixed_shape else None,
        "sd": config.query_max_pieces if fixed_shape else None,
    }
    return {
        **_sd(contexts, config, widths["sd"]),
        **_ih(contexts, config, widths["ih"], source),
        **_pa(contexts, config, widths["pa"], source),
    }


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def tensorize(
    contexts: pa.Table,
    config: ModelConfig,
    *,
    fixed_shape: bool = False,
    shuffle_seed: int | None = None,
    shared_context: bool = False,
    source: str = "<contexts>",
) -> ModelInputs:
    """Turn context rows (``CONTEXTS_SCHEMA``; extra columns ignored) into model inputs.

    One sequence per group of at most C candidates (see the module docstring); with
    ``shared_context`` the same groups in the shared-context layout instead
    (``ModelInputs.group_context``): each request's context tensorized once, requests
    without candidates left out. With
    ``fixed_shape`` every variable dimension is padded to its configured maximum
    (IH ``ih_max_len``, PA ``3 * (pa_per_group + 2)``, candidates C, query pieces
    ``query_max_pieces``) so that batches from different calls concatenate (Triton
    dynamic batching); otherwise to the longest in this batch.
    """
    missing = [f.name for f in CONTEXTS_SCHEMA if f.name not in contexts.column_names]
    if missing:
        raise ContractError("contexts", source, "required column is missing", column=missing[0])
    if fixed_shape and config.group_size == 0:
        raise ValueError("fixed_shape needs a fixed group_size (C > 0)")
    per_row = _context_arrays(contexts, config, fixed_shape, source)
    cand, request_row, flat_index = _candidate_groups(
        contexts, config, fixed_shape, shuffle_seed, source
    )
    group_context = None
    if shared_context:
        rows, group_context = np.unique(request_row, return_inverse=True)
        tensors = {name: per_row[name][rows] for name in per_row} | cand
    else:
        tensors = {name: per_row[name][request_row] for name in per_row} | cand
    out = {
        name: torch.from_numpy(np.ascontiguousarray(tensors[name], dtype=spec.dtype))
        for name, spec in TENSOR_SPECS.items()
    }
    return ModelInputs(
        **out,
        request_row=torch.from_numpy(request_row.astype(np.int64)),
        cand_flat_index=torch.from_numpy(flat_index.astype(np.int64)),
        group_context=None if group_context is None else torch.from_numpy(group_context.astype(np.int64)),
    )


def tensorize_contexts(
    contexts: pa.Table, config: ModelConfig, *, fixed_shape: bool = False, source: str = "<contexts>"
) -> ModelInputs:
    """One row per context row, no candidates (``ModelInputs.from_contexts``): the user
    tower's input, for every row whatever its candidates (a request without any too).
    Padding as ``tensorize``'s: to the longest in this batch, or with ``fixed_shape`` to
    the configured maxima."""
    missing = [f.name for f in CONTEXTS_SCHEMA if f.name not in contexts.column_names]
    if missing:
        raise ContractError("contexts", source, "required column is missing", column=missing[0])
    per_row = _context_arrays(contexts, config, fixed_shape, source)
    return ModelInputs.from_contexts({
        name: torch.from_numpy(np.ascontiguousarray(per_row[name], dtype=TENSOR_SPECS[name].dtype))
        for name in CONTEXT_TENSORS
    })


def candidate_values(contexts: pa.Table, column: str, inputs: ModelInputs) -> torch.Tensor:
    """A per-candidate list column (e.g. ``label_click``) laid out like the candidate slots.

    Returns [B, C] float32, 0 at padding; used to gather training labels.
    """
    assert inputs.cand_flat_index is not None, "inputs did not come from tensorize()"
    flat = pc.fill_null(pc.list_flatten(_list_column(contexts, column)), 0)
    values = flat.to_numpy(zero_copy_only=False).astype(np.float32)
    index = inputs.cand_flat_index.numpy()
    out = np.where(index >= 0, values[np.maximum(index, 0)] if len(values) else 0.0, 0.0)
    return torch.from_numpy(out.astype(np.float32))


def candidate_scores(inputs: ModelInputs, per_slot: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-slot outputs (name -> (B, C), e.g. ``score()``'s) back in the flattened
    ``cand_item_id`` order of the context table: name -> float32 [n_candidates]."""
    assert inputs.cand_flat_index is not None, "inputs did not come from tensorize()"
    index = inputs.cand_flat_index.cpu().numpy()
    valid = index >= 0
    n = int(index.max(initial=-1)) + 1
    out = {}
    for name, values in per_slot.items():
        flat = np.zeros(n, np.float32)
        flat[index[valid]] = values.detach().float().cpu().numpy()[valid]
        out[name] = flat
    return out
