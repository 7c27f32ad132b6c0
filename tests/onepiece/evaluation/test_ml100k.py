"""MovieLens-100k: reading the wheel, the leave-one-out split, full ranking, the CLI.

A small synthetic zip with the wheel's layout stands in for the real data, so these
tests need no download; one slow test runs the real download when PyPI is reachable.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from onepiece.cli import app
from onepiece.errors import UserError
from onepiece.evaluation import ml100k, ml100k_data

GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Children's"]


def fake_wheel(path: Path, n_users: int = 12, n_items: int = 30, seed: int = 0) -> Path:
    """An ml-100k-shaped wheel: each user rates a run of consecutive items, in time order
    (so the next item is predictable), with shuffled file order and one timestamp tie."""
    rng = np.random.default_rng(seed)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    rows = []
    for u in range(1, n_users + 1):
        start = int(rng.integers(1, n_items - 8))
        for k in range(int(rng.integers(5, 9))):
            rows.append((u, start + k, 3, 880000000 + 1000 * u + 10 * k))
    rows.append((1, n_items, 4, rows[0][3]))  # ties user 1's first rating
    for i in rng.permutation(len(rows)):
        inter.append("\t".join(map(str, rows[i])))
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    items += [f"{i}\tMovie {i}\t1995\t{GENRES[i % 5]} {GENRES[(i * 7) % 5]}" for i in range(1, n_items + 1)]
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    users += [f"{u}\t{18 + 3 * u}\t{'MF'[u % 2]}\t{['other', 'artist', 'writer'][u % 3]}\t0{u}" for u in range(1, n_users + 1)]
    with zipfile.ZipFile(path, "w") as z:
        for kind, lines in (("inter", inter), ("item", items), ("user", users)):
            z.writestr(ml100k_data.MEMBER.format(kind=kind), "\n".join(lines) + "\n")
    return path


def test_load_orders_by_time_and_indexes_densely(tmp_path: Path) -> None:
    data = ml100k_data.load(fake_wheel(tmp_path / "w.whl"))
    assert (data.n_users, data.n_items, data.dropped_users) == (12, 30, 0)
    # User 2's items are consecutive in time, whatever the file order.
    assert np.all(np.diff(data.sequences[1]) == 1)
    # User 1's extra rating ties the first timestamp: both stay, at the front.
    assert data.n_items in data.sequences[0][:2].tolist()
    assert data.item_genre.shape == (31,) and data.item_genre[0] == 0 and data.item_genre[1:].min() >= 1
    assert set(data.user_gender[1:].tolist()) == {1, 2}
    assert data.user_occupation[1:].max() == 3


def test_leave_one_out_split(tmp_path: Path) -> None:
    data = ml100k_data.load(fake_wheel(tmp_path / "w.whl"))
    split = ml100k_data.leave_one_out(data)
    for i, u in enumerate(split.users):
        seq = data.sequences[u - 1]
        assert split.test_target[i] == seq[-1]
        assert split.valid_target[i] == seq[-2]
        assert split.train[i].tolist() == seq[:-2].tolist()


def test_a_wrong_wheel_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("something/else.txt", "x")
    with pytest.raises(UserError, match=r"bad.whl has no member .*ml-100k.inter"):
        ml100k_data.load(bad)
    with pytest.raises(UserError, match="not found"):
        ml100k_data.load(tmp_path / "missing.whl")


def test_full_ranking_masks_history_and_ranks_every_item(tmp_path: Path) -> None:
    data = ml100k_data.load(fake_wheel(tmp_path / "w.whl"))
    split = ml100k_data.leave_one_out(data)
    cfg = ml100k.ML100kConfig(d_model=16, ih_max_len=8)
    config = ml100k.model_configs(data, cfg)["onepiece"]
    from onepiece.model import OnePiece

    model = OnePiece(config).eval()
    ranks = ml100k.full_ranking_ranks(model, data, split.users, split.train, split.valid_target)
    # Masked history items can only move the target up: ranks lie in [0, n_items - |history|).
    limit = np.array([data.n_items - len(set(h.tolist()) - {t}) for h, t in zip(split.train, split.valid_target)])
    assert np.all((ranks >= 0) & (ranks < limit))


def test_ml100k_command_writes_metrics_in_the_issue_shape(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "w.whl", n_users=20)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["ml100k", "--wheel", str(wheel), "--out", str(out), "--epochs", "2", "--samples-per-user", "3",
              "--workers", "1"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert list(doc) == ["onepiece", "sasrec"]
    for scores in doc.values():
        assert list(scores) == ["hr@10", "ndcg@10", "mrr@10"]
        assert 0.0 <= scores["mrr@10"] <= scores["ndcg@10"] <= scores["hr@10"] <= 1.0
    assert (out / "training_curves_onepiece.png").stat().st_size > 0


def test_training_batches_hold_every_sample_once_and_are_seeded(tmp_path: Path) -> None:
    data = ml100k_data.load(fake_wheel(tmp_path / "w.whl", n_users=20))
    split = ml100k_data.leave_one_out(data)
    cfg = ml100k.ML100kConfig(d_model=16, ih_max_len=4, samples_per_user=3, batch_size=8)
    config = ml100k.model_configs(data, cfg)["onepiece"]
    batches = list(ml100k.epoch_batches(config, data, split, cfg, epoch=1))
    n_samples = sum(min(len(t) - 1, 3) for t in split.train)
    assert sum(int(b.inputs.ih_len.shape[0]) for b in batches) == n_samples
    # One target per sample: its label is 1 for every task.
    assert all(float(b.labels["click"][:, 0].min()) == 1.0 for b in batches)
    again = list(ml100k.epoch_batches(config, data, split, cfg, epoch=1))
    assert all(torch.equal(a.inputs.ih_item_cat, b.inputs.ih_item_cat) for a, b in zip(batches, again))
    # Each target carries its item's log q (share of the training items, + 1 smoothing).
    counts = np.ones(data.n_items + 1)
    for seq in split.train:
        for item in seq:
            counts[item] += 1
    for b in batches:
        targets = b.inputs.cand_item_cat[:, 0, 0].numpy()
        assert b.log_q is not None
        np.testing.assert_allclose(b.log_q[:, 0].numpy(), np.log(counts / counts.sum())[targets], rtol=1e-5)
    off = dataclasses.replace(cfg, sampling_correction=False)
    assert next(ml100k.epoch_batches(config, data, split, off, epoch=1)).log_q is None


@pytest.mark.slow
def test_training_both_models_at_once_gives_the_one_by_one_numbers(tmp_path: Path) -> None:
    data = ml100k_data.load(fake_wheel(tmp_path / "w.whl", n_users=20))
    split = ml100k_data.leave_one_out(data)
    cfg = ml100k.ML100kConfig(epochs=2, samples_per_user=3, d_model=16, ih_max_len=8, batch_size=16)
    seen: list[tuple[str, int]] = []
    parallel = ml100k.run(data, split, cfg, on_epoch=lambda name, record: seen.append((name, record["epoch"])))
    serial = ml100k.run(data, split, dataclasses.replace(cfg, workers=1))
    assert parallel == serial
    assert sorted(seen) == [("onepiece", 1), ("onepiece", 2), ("sasrec", 1), ("sasrec", 2)]


@pytest.mark.slow
def test_the_real_wheel_downloads_and_reads(tmp_path: Path) -> None:
    try:
        wheel = ml100k_data.fetch_wheel(tmp_path / "cache")
    except UserError as err:
        pytest.skip(reason=f"PyPI not reachable: {err}")
    data = ml100k_data.load(wheel)
    assert (data.n_users, data.n_items) == (943, 1682)
    assert sum(len(s) for s in data.sequences) == 100_000
