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
import pyarrow.parquet as pq
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


def test_ml100k_command_over_two_seeds_writes_ranks_and_the_comparison(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path / "w.whl", n_users=20)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["ml100k", "--wheel", str(wheel), "--out", str(out), "--epochs", "2", "--samples-per-user", "3",
              "--workers", "1", "--seed", "5", "--seeds", "2", "--resamples", "200", "--max-users", "15"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert list(doc) == ["onepiece", "sasrec", "seeds", "comparison"]
    assert doc["seeds"] == [5, 6]
    ranks = pq.read_table(out / "test_ranks.parquet").to_pandas()
    assert ranks.columns.tolist() == ["user", "model", "seed", "rank"]
    assert len(ranks) == 2 * 2 * 15
    users = {key: group["user"].tolist() for key, group in ranks.groupby(["model", "seed"])}
    assert users == {(m, s): list(range(1, 16)) for m in ("onepiece", "sasrec") for s in (5, 6)}
    for name in ("onepiece", "sasrec"):
        scores = doc[name]
        assert list(scores) == ["hr@10", "ndcg@10", "mrr@10", "per_seed"]
        assert list(scores["per_seed"]) == ["5", "6"]
        for metric in ("hr@10", "ndcg@10", "mrr@10"):
            assert scores[metric] == pytest.approx(np.mean([scores["per_seed"][s][metric] for s in ("5", "6")]))
        assert 0.0 <= scores["mrr@10"] <= scores["ndcg@10"] <= scores["hr@10"] <= 1.0
        for s in (5, 6):  # the per-seed figures are the written ranks' figures
            written = ranks[(ranks.model == name) & (ranks.seed == s)]["rank"].to_numpy()
            assert scores["per_seed"][str(s)] == ml100k.ranking_scores(written)
    c = doc["comparison"]
    assert (c["a"], c["b"], c["metric"], c["users"], c["resamples"]) == ("onepiece", "sasrec", "ndcg@10", 15, 200)
    assert c["delta"] == pytest.approx(doc["onepiece"]["ndcg@10"] - doc["sasrec"]["ndcg@10"])
    for s in ("5", "6"):
        assert c["per_seed"][s] == pytest.approx(
            doc["onepiece"]["per_seed"][s]["ndcg@10"] - doc["sasrec"]["per_seed"][s]["ndcg@10"]
        )
    assert c["ci95"][0] <= c["delta"] <= c["ci95"][1]
    assert c["verdict"] in {"holds", "fails", "within noise"}
    assert f"-> {c['verdict']}" in result.output
    histories = json.loads((out / "histories.json").read_text())
    assert {n: list(h) for n, h in histories.items()} == {"onepiece": ["5", "6"], "sasrec": ["5", "6"]}
    assert (out / "training_curves_onepiece_seed6.png").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.staging")]  # published atomically


def test_ml100k_command_rejects_zero_seeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["ml100k", "--wheel", str(fake_wheel(tmp_path / "w.whl")),
                                      "--out", str(tmp_path / "out"), "--seeds", "0"])
    assert result.exit_code != 0 and "--seeds" in result.output
    assert not (tmp_path / "out").exists()


def hand_result(onepiece: dict[int, list[int]], sasrec: dict[int, list[int]]) -> ml100k.ML100kResult:
    seeds = tuple(onepiece)
    n = len(onepiece[seeds[0]])
    return ml100k.ML100kResult(
        seeds=seeds,
        users=np.arange(1, n + 1),
        ranks={"onepiece": {s: np.array(r) for s, r in onepiece.items()},
               "sasrec": {s: np.array(r) for s, r in sasrec.items()}},
        histories={"onepiece": {s: {} for s in seeds}, "sasrec": {s: {} for s in seeds}},
    )


def test_the_comparison_reads_per_user_ndcg_over_seeds() -> None:
    rng = np.random.default_rng(0)
    users = 300
    # onePiece puts the target at rank 0 for most users, SASRec mostly outside the top 10.
    better = {s: np.where(rng.random(users) < 0.6, 0, 50).tolist() for s in (0, 1, 2)}
    worse = {s: np.where(rng.random(users) < 0.2, 0, 50).tolist() for s in (0, 1, 2)}
    cfg = ml100k.ML100kConfig(resamples=300)
    win = ml100k.comparison(hand_result(better, worse), cfg)
    assert win["verdict"] == "holds" and win["ci95"][0] > 0.25
    # Gains are 1 at rank 0 and 0 at rank 50: d is the seeds' mean difference in rank-0 shares.
    shares = [np.mean(np.array(better[s]) == 0) - np.mean(np.array(worse[s]) == 0) for s in (0, 1, 2)]
    assert win["delta"] == pytest.approx(np.mean(shares))
    assert [win["per_seed"][str(s)] for s in (0, 1, 2)] == pytest.approx(shares)
    assert ml100k.comparison(hand_result(worse, better), cfg)["verdict"] == "fails"
    tie = ml100k.comparison(hand_result(better, better), cfg)
    assert tie["delta"] == 0 and tie["verdict"] == "within noise"
    assert list(tie["per_seed"]) == ["0", "1", "2"]
    # A target at rank r < 10 gains 1 / log2(r + 2): ranks 0 and 2 against 1 and 10.
    d = ml100k.ndcg_difference(hand_result({0: [0, 2]}, {0: [1, 10]}), "onepiece", "sasrec", resamples=50)
    assert d.delta == pytest.approx((1 + 0.5) / 2 - (1 / np.log2(3)) / 2)


def test_the_ranks_table_holds_every_model_seed_and_user() -> None:
    table = ml100k.ranks_table(hand_result({3: [0, 4], 4: [1, 7]}, {3: [9, 2], 4: [5, 5]}))
    assert table.schema.names == ["user", "model", "seed", "rank"]
    assert table.to_pylist()[:3] == [
        {"user": 1, "model": "onepiece", "seed": 3, "rank": 0},
        {"user": 2, "model": "onepiece", "seed": 3, "rank": 4},
        {"user": 1, "model": "onepiece", "seed": 4, "rank": 1},
    ]
    assert table.num_rows == 8 and table.column("rank").to_pylist()[4:] == [9, 2, 5, 5]


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
    cfg = ml100k.ML100kConfig(epochs=2, samples_per_user=3, d_model=16, ih_max_len=8, batch_size=16, seeds=2)
    seen: list[tuple[str, int]] = []
    parallel = ml100k.run(data, split, cfg, on_epoch=lambda name, record: seen.append((name, record["epoch"])))
    serial = ml100k.run(data, split, dataclasses.replace(cfg, workers=1))
    assert parallel.seeds == serial.seeds == (0, 1)
    for name in ("onepiece", "sasrec"):
        for s in (0, 1):
            np.testing.assert_array_equal(parallel.ranks[name][s], serial.ranks[name][s])
            assert parallel.histories[name][s]["epochs"] == serial.histories[name][s]["epochs"]
    # Each (model, seed) is its own job; the seeds train differently.
    assert sorted(seen) == [(f"{m}@{s}", e) for m in ("onepiece", "sasrec") for s in (0, 1) for e in (1, 2)]
    assert parallel.histories["onepiece"][0]["epochs"] != parallel.histories["onepiece"][1]["epochs"]


@pytest.mark.slow
def test_the_real_wheel_downloads_and_reads(tmp_path: Path) -> None:
    try:
        wheel = ml100k_data.fetch_wheel(tmp_path / "cache")
    except UserError as err:
        pytest.skip(reason=f"PyPI not reachable: {err}")
    data = ml100k_data.load(wheel)
    assert (data.n_users, data.n_items) == (943, 1682)
    assert sum(len(s) for s in data.sequences) == 100_000
