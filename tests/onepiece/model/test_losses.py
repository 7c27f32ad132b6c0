"""Loss functions of the spec, checked against explicit formulas."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch
from model_helpers import item_columns, tiny_config

from onepiece.contract.schemas import ITEMS_SCHEMA, TASKS
from onepiece.model import OnePiece, export_item_vectors
from onepiece.model.losses import bce, clip_loss, ranking_loss, retrieval_loss, setwise_contrastive


def test_bce_ignores_padding():
    logits = torch.tensor([[2.0, -1.0, 50.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0]])
    valid = torch.tensor([[True, True, False]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert abs(bce(logits, labels, valid).item() - expected) < 1e-6


def test_setwise_contrastive_is_minus_log_softmax_at_positives():
    logits = torch.tensor([[1.0, 2.0, 0.5, 9.0]])
    labels = torch.tensor([[1, 0, 1, 1]])
    valid = torch.tensor([[True, True, True, False]])
    t = 0.1
    z = torch.tensor([1.0, 2.0, 0.5]) / t
    log_p = z - torch.logsumexp(z, 0)
    expected = -(log_p[0] + log_p[2]) / 2
    got = setwise_contrastive(logits, labels, valid, t)
    assert abs(got.item() - expected.item()) < 1e-4
    better = setwise_contrastive(torch.tensor([[3.0, 2.0, 2.5, 9.0]]), labels, valid, t)
    assert better < got


def test_ranking_loss_reads_only_the_supervising_steps():
    config = tiny_config(num_steps=3)
    torch.manual_seed(0)
    logits = {t: torch.randn(2, 4, 4) for t in TASKS}
    labels = {t: torch.randint(0, 2, (2, 4)).float() for t in TASKS}
    valid = torch.ones(2, 4, dtype=torch.bool)
    base = ranking_loss(logits, labels, valid, config)["total"]
    steps = config.task_steps()
    other = {t: l.clone() for t, l in logits.items()}
    other["click"][..., 0] += 5.0  # click is supervised at step 2, not 0
    assert torch.equal(ranking_loss(other, labels, valid, config)["total"], base)
    other["click"][..., steps["click"]] += 5.0
    assert not torch.equal(ranking_loss(other, labels, valid, config)["total"], base)



def test_later_tasks_on_exposed_leaves_unexposed_candidates_to_the_impression_head():
    torch.manual_seed(1)
    logits = {t: torch.randn(2, 4, 4) for t in TASKS}
    labels = {t: torch.zeros(2, 4) for t in TASKS}
    labels["impression"][:, :2] = 1.0  # slots 0-1 exposed, 2-3 unexposed (negatives)
    labels["click"][:, 0] = 1.0
    valid = torch.ones(2, 4, dtype=torch.bool)
    on, off = tiny_config(later_tasks_on_exposed=True), tiny_config()
    moved = {t: l.clone() for t, l in logits.items()}
    for task in TASKS:
        moved[task][:, 2:, :] += 3.0  # raise the unexposed candidates at every step
    before, after = ranking_loss(logits, labels, valid, on), ranking_loss(moved, labels, valid, on)
    for task in ("click", "add_to_cart", "order"):
        assert torch.allclose(after[task], before[task])  # unexposed slots are outside their population
    assert after["impression"] > before["impression"]
    # by default they are negatives of every task
    assert ranking_loss(moved, labels, valid, off)["click"] > ranking_loss(logits, labels, valid, off)["click"]

def test_clip_loss_is_low_for_aligned_pairs_and_symmetric():
    torch.manual_seed(1)
    users = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
    aligned = clip_loss(users, users, 0.1)
    shuffled = clip_loss(users, users[torch.tensor([1, 2, 3, 4, 0])], 0.1)
    assert aligned < shuffled
    items = torch.randn(5, 8)
    assert torch.allclose(clip_loss(users, items, 0.1), clip_loss(items, users, 0.1))


def test_clip_loss_drops_duplicate_items_and_corrects_user_to_item_by_log_q():
    torch.manual_seed(2)
    users, items = torch.randn(3, 4), torch.randn(3, 4)
    ids = torch.tensor([7, 7, 9])  # rows 0 and 1 hold the same item
    log_q = torch.tensor([-1.0, -1.0, -3.0])
    logits = users @ items.T  # temperature 1
    u2i = logits - log_q[None, :]
    keep = ~((ids[:, None] == ids[None, :]) & ~torch.eye(3, dtype=torch.bool))
    expected = 0.0
    for i in range(3):  # user i against the items that are not copies of its own
        expected += 0.5 * -torch.log_softmax(u2i[i][keep[i]], 0)[keep[i][: i + 1].sum() - 1] / 3
        expected += 0.5 * -torch.log_softmax(logits[:, i][keep[:, i]], 0)[keep[: i + 1, i].sum() - 1] / 3
    got = clip_loss(users, items, 1.0, item_ids=ids, log_q=log_q)
    assert abs(got.item() - expected.item()) < 1e-5
    # Without ids the duplicate is a negative; a constant shift of log q changes nothing.
    assert not torch.allclose(clip_loss(users, items, 1.0, log_q=log_q), got)
    assert torch.allclose(clip_loss(users, items, 1.0, item_ids=ids, log_q=log_q + 5.0), got)


def test_retrieval_loss_has_gradients_for_users_and_items():
    config = tiny_config(mode="retrieval", num_steps=2)
    users = torch.randn(4, 3, 8, requires_grad=True)
    items = torch.randn(4, 5, 8, requires_grad=True)
    labels = {t: torch.tensor([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 1, 1, 0]]).float() for t in TASKS}
    valid = torch.ones(4, 5, dtype=torch.bool)
    loss = retrieval_loss(users, items, labels, valid, config)["total"]
    loss.backward()
    assert torch.isfinite(loss) and users.grad.abs().sum() > 0 and items.grad.abs().sum() > 0


def test_export_item_vectors_match_the_item_adapter():
    config = tiny_config(mode="retrieval", num_steps=2)
    torch.manual_seed(0)
    model = OnePiece(config).eval()
    ids = [3, 9, -1, 400]
    cols = item_columns("x", ids, np.random.default_rng(0))
    row = {"item_id": ids} | {k.removeprefix("x_"): v for k, v in cols.items() if k != "x_item_id"}
    row["event_timestamp"] = [0] * len(ids)
    table = pa.Table.from_pydict(row).cast(ITEMS_SCHEMA)
    got_ids, vectors = export_item_vectors(model, table, batch_size=3)
    assert got_ids.tolist() == ids and vectors.shape == (4, config.d_model)
    from onepiece.model.inputs import ITEM_NUM_FEATURES, _transform, ITEM_CAT_FEATURES

    cat = torch.tensor([[i] + [row[f.name][k] for f in ITEM_CAT_FEATURES] for k, i in enumerate(ids)])
    num = torch.tensor(
        np.stack([_transform(f, np.array(row[f.name], float)) for f in ITEM_NUM_FEATURES], 1)
    )
    with torch.no_grad():
        expected = model.encoder.items(cat, num).numpy()
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
