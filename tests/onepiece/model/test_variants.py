"""Every named variant builds, trains one step (forward + backward) and round-trips
through a checkpoint; the ablation variants differ from onepiece in one field."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from model_helpers import contexts_table, random_rows, tiny_config, training_table

from onepiece.contract.schemas import LABEL_COLUMNS, TASKS
from onepiece.errors import UserError
from onepiece.model import (
    VARIANTS,
    ModelConfig,
    OnePiece,
    load_checkpoint,
    save_checkpoint,
    score,
    tensorize,
    variant_config,
)
from onepiece.model.inputs import candidate_values
from onepiece.model.losses import ranking_loss, retrieval_loss
from onepiece.model.variants import RANKING_DEFAULTS

SIZES = {
    k: getattr(tiny_config(), k)
    for k in ("d_model", "id_dim", "side_dim", "item_vocab", "shop_vocab", "user_vocab",
              "query_vocab", "piece_vocab", "ih_max_len", "group_size")
}
REQUIRED = {"dlrm", "hstu", "hstu_pa", "rearec", "rearec_pa", "onepiece", "onepiece_ids_only",
            "onepiece_no_pa", "onepiece_no_sd", "onepiece_causal", "onepiece_invisible",
            "onepiece_k1", "onepiece_k2", "onepiece_last_step"}


def test_required_variant_names_exist():
    assert REQUIRED <= set(VARIANTS)
    with pytest.raises(ValueError, match="unknown model variant 'nope'"):
        variant_config("nope")


@pytest.mark.parametrize("name", [v for v in VARIANTS if v.startswith("onepiece_")])
def test_onepiece_ablations_change_one_thing(name):
    base, variant = dataclasses.asdict(variant_config("onepiece")), dataclasses.asdict(variant_config(name))
    changed = {k for k in base if base[k] != variant[k]} - {"name"}
    # retrieval changes the mode (and K), and reads the earlier inputs
    retrieval = {"mode", "num_steps"} | set(RANKING_DEFAULTS)
    assert len(changed) == 1 or changed == retrieval, changed


def test_pa_rows_differ_from_their_baseline_in_use_pa_only():
    for a, b in (("dlrm", "dlrm_pa"), ("hstu", "hstu_pa"), ("rearec", "rearec_pa")):
        x, y = dataclasses.asdict(variant_config(a)), dataclasses.asdict(variant_config(b))
        assert {k for k in x if x[k] != y[k]} == {"name", "use_pa"}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_trains_one_step_and_round_trips(name, tmp_path):
    config = variant_config(name, **SIZES)
    torch.manual_seed(0)
    model = OnePiece(config)
    table = training_table(random_rows(6, seed=7))
    x = tensorize(table, config, shuffle_seed=0)
    labels = {t: candidate_values(table, f"label_{t}", x) for t in TASKS}
    out = model(x)
    for logits in out.logits.values():
        assert logits.shape == (*x.cand_item_cat.shape[:2], config.num_outputs)
    if config.mode == "retrieval":
        losses = retrieval_loss(out.user_vectors, out.item_vectors, labels, out.cand_valid, config)
    else:
        losses = ranking_loss(out.logits, labels, out.cand_valid, config)
    losses["total"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0

    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == config
    before, after = score(model, x), score(loaded, x)
    for task in TASKS:
        torch.testing.assert_close(after[task], before[task], atol=0, rtol=0)
    save_checkpoint(loaded, tmp_path / "again")
    for file in ("model.safetensors", "config.json"):
        assert (tmp_path / "ckpt" / file).read_bytes() == (tmp_path / "again" / file).read_bytes()


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="missing model.safetensors"):
        load_checkpoint(tmp_path)
    model = OnePiece(tiny_config())
    save_checkpoint(model, tmp_path / "c")
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    config["d_model"] = 48
    (tmp_path / "c" / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not match its config"):
        load_checkpoint(tmp_path / "c")


def test_pointwise_group_size_one_scores_every_candidate():
    config = tiny_config(group_size=1)
    x = tensorize(contexts_table(random_rows(3, seed=2)), config)
    assert x.cand_item_cat.shape[1] == 1 and (x.cand_len == 1).all()
    probs = score(OnePiece(config), x)
    assert (probs["click"] > 0).all()


def test_config_json_round_trip_and_validation():
    config = variant_config("onepiece_last_step", d_model=32)
    assert ModelConfig.from_json(config.to_json()) == config
    assert config.feature_service == "onepiece_ranker_v1"
    assert config.task_steps() == {t: 3 for t in TASKS}
    assert variant_config("onepiece_k1").task_steps() == {t: 1 for t in TASKS}
    assert variant_config("onepiece_k0").task_steps() == {t: 0 for t in TASKS}
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_json('{"nope": 1}')
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="user_vocab must be at least 2"):
        ModelConfig(user_vocab=1)  # only the out-of-vocabulary bucket: hashing would divide by 0


def test_label_columns_cover_the_tasks():
    assert LABEL_COLUMNS == tuple(f"label_{t}" for t in TASKS)


def test_a_config_json_from_before_the_issue_17_fields_rebuilds_its_own_model(tmp_path):
    """Checkpoints written before ``shared_candidate_adapter`` existed hold a candidate
    adapter of their own: loading one must rebuild that model, not the new default."""
    old = tiny_config(shared_candidate_adapter=False, structural_embedding_std=None)
    model = OnePiece(old)
    save_checkpoint(model, tmp_path)
    doc = json.loads((tmp_path / "config.json").read_text())
    for name in ("shared_candidate_adapter", "structural_embedding_std"):
        del doc[name]
    (tmp_path / "config.json").write_text(json.dumps(doc))
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == old and loaded.encoder.cand_adapter is not None
    assert OnePiece(tiny_config()).encoder.cand_adapter is None  # the default shares it
