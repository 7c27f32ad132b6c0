"""The shared-context layout: each request's context encoded once, its groups against it.

Exactness is against the reference: every group as its own full sequence with the same
mask, uncached. Rows have padding (variable IH and PA lengths, empty segments, unknown
ids), variable group counts, last partial groups and a request without candidates.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import contexts_table, random_rows, tiny_config

from onepiece.contract.schemas import TASKS
from onepiece.model import OnePiece, score, tensorize
from onepiece.model.backbone import Backbone, RelativeBias
from onepiece.model.inputs import CONTEXT_TENSORS, ModelInputs
from onepiece.model.masks import SEG_CAND, Roles, attention_mask

SHARED = {"context_sees_candidates": False}
#: The attention layers the exactness tests run: softmax, HSTU with its position bias, and
#: HSTU with the time buckets as well (the IH rows' events are hours apart).
ATTENTION = {
    "softmax": {"attention": "softmax"},
    "hstu": {"attention": "hstu"},
    "hstu_time": {"attention": "hstu", "hstu_time_buckets": 128},
}


def _table(n: int = 7, seed: int = 3, max_cands: int = 11):
    rows = random_rows(n, seed=seed, max_cands=max_cands)
    rows[2] = rows[2] | {k: [] for k in rows[2] if k.startswith("cand_")}  # no candidates
    return contexts_table(rows)


def _model(**overrides) -> OnePiece:
    torch.manual_seed(0)
    return OnePiece(tiny_config(**overrides)).eval()


def _strong_relative_bias(model: OnePiece) -> None:
    """HSTU layers: a relative position (and time) bias large enough that a wrong position
    or time shows."""
    for module in model.modules():
        if isinstance(module, RelativeBias):
            torch.nn.init.normal_(module.weight, std=1.0)
            if module.time_weight is not None:
                torch.nn.init.normal_(module.time_weight, std=1.0)


def _stacked(model: OnePiece, x: ModelInputs, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        out = model(x, **kwargs)
    return torch.stack([out.logits[t] for t in TASKS], dim=-1) * out.cand_valid[..., None, None]


def test_tensorize_shared_layout_holds_each_context_once():
    config = tiny_config(**SHARED)
    table = _table()
    per_sequence, shared = tensorize(table, config), tensorize(table, config, shared_context=True)
    n_cands = [len(c) for c in table.column("cand_item_id").to_pylist()]
    with_cands = [r for r, n in enumerate(n_cands) if n]
    assert shared.batch_size == len(with_cands) == table.num_rows - 1  # the empty request is left out
    assert shared.n_groups == per_sequence.n_groups == sum(-(-n // config.group_size) for n in n_cands)
    # group g's context is the row of its request, and the groups of a request are contiguous
    assert torch.equal(torch.tensor(with_cands)[shared.group_context], shared.request_row)
    expanded = shared.sequences()
    for name, value in per_sequence.tensors().items():
        assert torch.equal(getattr(expanded, name), value), name
    assert torch.equal(expanded.cand_flat_index, per_sequence.cand_flat_index)
    with pytest.raises(ValueError, match="per-sequence layout"):
        shared.select(torch.tensor([0]))


def test_bundles_merge_back_into_the_shared_layout_they_came_from():
    """Triton's shared-context requests: bundles of whole contexts (``bundle()``), some
    requests batching two equal-sized bundles, merged by ``from_bundles``."""
    config = tiny_config(**SHARED)
    shared = tensorize(_table(n=9, seed=5), config, fixed_shape=True, shared_context=True)
    runs = [torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([3]), torch.tensor([4, 5, 6, 7])]
    bundles = [shared.contexts(rows) for rows in runs]
    requests = [b.bundle() for b, _ in bundles]
    assert requests[0]["user_cat"].shape[:2] == (1, 2) and requests[0]["group_context"].shape[0] == 1
    assert bundles[1][0].n_groups == bundles[2][0].n_groups == 3  # batched as one request of 2
    requests[1:3] = [{n: torch.cat([requests[1][n], requests[2][n]]) for n in requests[1]}]
    merged, sizes = ModelInputs.from_bundles(requests)
    order = torch.cat([groups for _, groups in bundles])
    assert sum(n * g for n, g in sizes) == shared.n_groups
    expanded, want = merged.sequences(), shared.sequences()
    for name, value in want.tensors().items():
        assert torch.equal(getattr(expanded, name), value[order]), name
    bad = dict(requests[0], group_context=requests[0]["group_context"] + 5)
    with pytest.raises(ValueError, match="context rows must be in 0..1"):
        ModelInputs.from_bundles([bad])


def test_contexts_selects_contexts_with_all_their_groups():
    config = tiny_config(**SHARED)
    shared = tensorize(_table(), config, shared_context=True)
    rows = torch.tensor([4, 0, 2])
    part, groups = shared.contexts(rows)
    assert torch.equal(shared.group_context[groups], rows[part.group_context])
    assert sorted(groups.tolist()) == sorted(torch.nonzero(torch.isin(shared.group_context, rows)).flatten().tolist())
    for name in CONTEXT_TENSORS:
        assert torch.equal(getattr(part, name), getattr(shared, name)[rows])
    assert torch.equal(part.cand_item_cat, shared.cand_item_cat[groups])


@pytest.mark.parametrize("attention", list(ATTENTION))
@pytest.mark.parametrize("num_steps", [0, 3])
@pytest.mark.parametrize("head_reads_sd", [False, True])
def test_shared_path_equals_every_group_as_its_own_sequence(num_steps, head_reads_sd, attention):
    model = _model(**SHARED, num_steps=num_steps, head_reads_sd=head_reads_sd, **ATTENTION[attention])
    _strong_relative_bias(model)
    assert model.shares_context
    table = _table()
    shared = tensorize(table, model.config, shared_context=True)
    reference = _stacked(model, tensorize(table, model.config), cached=False)  # full sequences
    got = _stacked(model, shared)
    assert got.shape == reference.shape
    assert (got - reference).abs().max() <= 1e-5
    assert reference.abs().max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("attention", list(ATTENTION))
@pytest.mark.parametrize("num_steps", [0, 3])
def test_score_on_the_shared_layout_equals_per_group_scoring(num_steps, attention):
    model = _model(**SHARED, num_steps=num_steps, **ATTENTION[attention])
    _strong_relative_bias(model)
    table = _table(n=12, seed=8, max_cands=30)
    per_sequence = score(model, tensorize(table, model.config), trim=False, chunk_size=0)
    shared = tensorize(table, model.config, shared_context=True)
    for chunk_size, group_chunk in ((0, 0), (3, 2), (5, 7)):  # contexts and groups per forward
        got = score(model, shared, chunk_size=chunk_size, group_chunk=group_chunk)
        for task in TASKS:
            assert (got[task] - per_sequence[task]).abs().max() <= 1e-5, (task, chunk_size, group_chunk)
            assert ((got[task] > 0) == (per_sequence[task] > 0)).all()


def test_a_model_whose_context_sees_candidates_scores_the_shared_layout_per_sequence():
    model = _model()  # the paper's mask: the context attends to its group's candidates
    assert not model.shares_context
    table = _table()
    expected = score(model, tensorize(table, model.config))
    got = score(model, tensorize(table, model.config, shared_context=True))
    for task in TASKS:
        torch.testing.assert_close(got[task], expected[task])


@pytest.mark.parametrize(
    "overrides, shares",
    [({}, False), (SHARED, True), ({"candidates_visible": False}, True), ({"causal": True}, True),
     ({"backbone": "dlrm", "num_steps": 0}, False), ({"reasoning": "last_token"}, False),
     ({"attention": "hstu", "causal": True, "candidates_visible": False, "num_steps": 0}, True)],
)
def test_which_models_share_the_context(overrides, shares):
    assert _model(**overrides).shares_context is shares


@pytest.mark.parametrize("sees", [True, False])
def test_a_context_output_does_not_move_when_a_candidate_changes(sees):
    """The mask property on outputs: with ``context_sees_candidates`` off, no context
    position's output depends on any candidate; with it on (the paper's), they do."""
    torch.manual_seed(0)
    config = tiny_config(context_sees_candidates=sees)
    backbone = Backbone(config).eval()
    n_ctx, c = 9, 4
    index = torch.arange(n_ctx + c)[None]
    roles = Roles(
        segment=torch.cat([torch.zeros(1, n_ctx, dtype=torch.long), torch.full((1, c), SEG_CAND)], dim=1),
        block=torch.zeros_like(index),
        slot=torch.cat([torch.full((1, n_ctx), -1), torch.arange(c)[None]], dim=1),
        valid=torch.ones(2, n_ctx + c, dtype=torch.bool),
        index=index,
    )
    mask = attention_mask(roles, roles, causal=False, candidates_visible=True, context_sees_candidates=sees)
    x = torch.randn(2, n_ctx + c, config.d_model)
    changed = x.clone()
    changed[:, n_ctx + 1] += torch.randn(config.d_model)  # one candidate token
    with torch.no_grad():
        diff = (backbone(x, mask) - backbone(changed, mask)).abs()
    context_moved = diff[:, :n_ctx].max()
    if sees:
        assert context_moved > 1e-4
    else:
        assert context_moved == 0
    assert diff[:, n_ctx:].max() > 1e-4  # the candidates still see each other


def test_a_2000_candidate_request_is_scored_in_bounded_micro_batches(monkeypatch):
    """One request of 2,000 candidates (167 groups): the context is encoded once and the
    groups go against it at most ``group_chunk`` at a time; the scores equal one forward."""
    model = _model(**SHARED, num_steps=3)
    rows = random_rows(2, seed=11, max_cands=1)
    rows[0] = rows[0] | {k: (v * 2000)[:2000] for k, v in rows[0].items() if k.startswith("cand_")}
    rows[0]["cand_item_id"] = list(range(2000))
    shared = tensorize(contexts_table(rows), model.config, shared_context=True)
    assert shared.n_groups == 500 + 1  # C = 4 in the tiny config
    calls: list[tuple[int, int]] = []
    encode, groups_of = model.encode_contexts, model.score_groups

    def counted_encode(x, room):
        calls.append(("contexts", x.batch_size))
        return encode(x, room)

    def counted_groups(shared_context, x, groups=slice(None), task_steps=None):
        out = groups_of(shared_context, x, groups, task_steps)
        calls.append(("groups", out.cand_valid.shape[0]))
        return out

    monkeypatch.setattr(model, "encode_contexts", counted_encode)
    monkeypatch.setattr(model, "score_groups", counted_groups)
    got = score(model, shared, chunk_size=8, group_chunk=64)
    assert [n for kind, n in calls if kind == "contexts"] == [2]  # each context encoded once
    sizes = [n for kind, n in calls if kind == "groups"]
    assert max(sizes) == 64 and sum(sizes) == shared.n_groups
    monkeypatch.undo()
    whole = score(model, shared, chunk_size=0, group_chunk=0)
    for task in TASKS:
        assert (got[task] - whole[task]).abs().max() <= 1e-5
        assert (got[task][:500] > 0).all()


@pytest.mark.parametrize("attention", list(ATTENTION))
def test_training_through_the_shared_layout_matches_per_sequence_gradients(attention):
    torch.manual_seed(0)
    # id_dropout off: its random draws depend on the layout, the gradients' equality does not
    model = OnePiece(tiny_config(**SHARED, head_reads_sd=True, **ATTENTION[attention], id_dropout=0.0)).train()
    _strong_relative_bias(model)
    table = _table()
    weights = {}

    def grads(x: ModelInputs) -> dict[str, torch.Tensor]:
        model.zero_grad()
        out = model(x)
        if not weights:
            weights.update({t: torch.randn_like(v) for t, v in out.logits.items()})
        loss = sum((v * weights[t] * out.cand_valid[..., None]).sum() for t, v in out.logits.items())
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    a = grads(tensorize(table, model.config))
    b = grads(tensorize(table, model.config, shared_context=True))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attention", list(ATTENTION))
@pytest.mark.parametrize("num_steps", [0, 3])
def test_folding_groups_over_the_context_equals_copying_it_per_group(num_steps, attention):
    """Serving folds a request's groups against its context (``prefix_attention``); the
    reference copies the context's keys and values into every group. Same outputs, with
    groups of several requests interleaved in any order and unequal group counts."""
    model = _model(**SHARED, num_steps=num_steps, n_heads=2, **ATTENTION[attention])
    _strong_relative_bias(model)
    shared = tensorize(_table(n=9, seed=5, max_cands=17), model.config, shared_context=True)
    room = shared.cand_item_cat.shape[1] * (num_steps + 1)
    order = torch.randperm(shared.n_groups, generator=torch.Generator().manual_seed(0))
    outputs = {}
    prefix_of, folded = model.reasoner._prefix, []
    model.reasoner._prefix = lambda *args: folded.append(prefix_of(*args)) or folded[-1]  # type: ignore[method-assign]
    for fold in (True, False):
        model.reasoner.fold_groups = fold
        with torch.inference_mode():
            context = model.encode_contexts(shared, room)
            out = model.score_groups(context, shared, order)
        outputs[fold] = torch.stack([out.logits[t] for t in TASKS], dim=-1) * out.cand_valid[..., None, None]
    assert (outputs[True] - outputs[False]).abs().max() <= 1e-5
    assert outputs[False].abs().max() > 1e-3
    assert [p is not None for p in folded] == [True, False]  # the folded path did run


def test_the_grid_puts_each_group_in_its_requests_row():
    from onepiece.model.prefix_attention import ContextPrefix

    group_context = torch.tensor([5, 2, 5, 5, 9, 2])
    contexts, grid, width = ContextPrefix.grid_of(group_context)
    assert contexts.tolist() == [2, 5, 9] and width == 3
    assert grid.tolist() == [3, 0, 4, 5, 6, 1]  # row * width + rank within the request
    prefix = ContextPrefix([], [], None, grid, rows=3, width=width)
    t = torch.randn(6, 2, 4, 3)  # (G, h, n, X)
    folded = prefix.to_grid(t)
    assert folded.shape == (3, 2, 3 * 4, 3)
    assert torch.equal(prefix.from_grid(folded, 4), t)
    assert torch.equal(folded[1, :, 4:8], t[2])  # request 5's second group
    assert not folded[2, :, 4:].any()  # request 9 has one group: the rest of its row is empty


@pytest.mark.parametrize("variant", [SHARED, {"backbone": "dlrm", "num_steps": 0}, {}])
def test_the_wide_term_adds_one_linear_map_of_the_numerics_on_every_path(variant):
    """``wide_numerics``: logits = the deep model's + W [candidate numerics, query numerics],
    the same on the shared layout, per sequence and in ``score()``."""
    table = _table(n=6, seed=5, max_cands=14)
    model = _model(**variant, wide_numerics=True, candidate_set_features=True)
    assert model.wide is not None and not model.wide.linear.weight.any()  # zero at init
    torch.nn.init.normal_(model.wide.linear.weight, std=1.0)
    deep = _model(**variant, wide_numerics=False, candidate_set_features=True)
    deep.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("wide.")})
    x = tensorize(table, model.config)
    got, base = _stacked(model, x), _stacked(deep, x)
    numerics = torch.cat(
        [x.cand_item_num, x.query_num[:, None].expand(*x.cand_item_num.shape[:2], x.query_num.shape[-1])], dim=-1
    )
    linear = (numerics @ model.wide.linear.weight.T)[:, :, None, :] * x.cand_len.new_ones(1)  # (B, C, 1, T)
    valid = (torch.arange(x.cand_item_cat.shape[1])[None] < x.cand_len)[..., None, None]
    assert (got - (base + linear * valid)).abs().max() <= 1e-4
    assert (linear * valid).abs().max() > 0.1  # the term is there
    if model.shares_context:
        shared = tensorize(table, model.config, shared_context=True)
        scored = score(model, shared)
        reference = score(model, x, trim=False, chunk_size=0)
        for task in TASKS:
            assert (scored[task] - reference[task]).abs().max() <= 1e-5
