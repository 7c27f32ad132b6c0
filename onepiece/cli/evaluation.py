"""``onepiece ml100k``, ``onepiece ablation`` and ``onepiece compare``: the real-data check, the
paper's table, and paired intervals between rows of finished runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepiece.cli import app
from onepiece.cli.common import DataOption, console, friendly_errors
from onepiece.cli.train import parse_overrides


@app.command("ablation")
@friendly_errors
def ablation_command(
    data: DataOption = "data",
    out: Annotated[Path, typer.Option("--out", help="Directory for ablation.json, .md and plots.")] = Path(
        "runs/ablation"
    ),
    trainset: Annotated[
        Path | None,
        typer.Option(help="Use prebuilt shards DIR/train and DIR/test instead of running the Beam job."),
    ] = None,
    variants: Annotated[str | None, typer.Option(help="Comma-separated subset of the rows.")] = None,
    side_features: Annotated[
        str, typer.Option(help="'feast' (the feature repo) or 'snapshots' (ASOF joins on the tables).")
    ] = "feast",
    epochs: Annotated[
        int | None, typer.Option(help="Maximum epochs per row (default: AblationConfig.epochs, 12).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option(help="AdamW learning rate of every row (default: AblationConfig.lr, 2e-3).")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Candidate groups per training step of every row (default: AblationConfig.batch_size, 64)."),
    ] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(help="'constant', or 'cosine': every row's learning rate decays to 0 by the last epoch "
                     "(default: AblationConfig.lr_schedule, constant)."),
    ] = None,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Optimiser steps of linear learning-rate warm-up (default: 0).")
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(help="Epochs without a better validation click AUC before a row stops (default: "
                     "AblationConfig.patience, 3)."),
    ] = None,
    max_train_requests: Annotated[int, typer.Option(help="Training requests sampled (0 = all).")] = 1500,
    max_test_requests: Annotated[int, typer.Option(help="Test requests sampled (0 = all).")] = 600,
    max_unexposed: Annotated[
        int | None,
        typer.Option(help="Unexposed candidates kept per training request, negatives for every task "
                     "(default: AblationConfig.max_unexposed, 20)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split's sampling and the first training seed.")] = 0,
    seeds: Annotated[
        int,
        typer.Option(
            help="Training seeds per row (seed, seed+1, ...) on the same split: the table shows their mean and "
            "each ordering the spread between seeds. Each seed costs one more full run."
        ),
    ] = 1,
    resamples: Annotated[
        int, typer.Option(help="Request resamples of the paired bootstrap behind each ordering's 95% interval.")
    ] = 1000,
    threads: Annotated[int, typer.Option(help="torch CPU threads per row.")] = 1,
    workers: Annotated[int, typer.Option(help="Rows trained at once, one process each.")] = 2,
    model_set: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a ModelConfig field of every row, KEY=VALUE; repeatable."),
    ] = None,
    curve: Annotated[
        str | None,
        typer.Option(
            "--learning-curve",
            help="Also train the rows at these training budgets (comma-separated requests, 0 = all; e.g. "
            "1500,6000,0) on the same test requests: learning_curve.json, learning_curve.png and a section "
            "of ablation.md. Each budget costs one more run of the rows.",
        ),
    ] = None,
    world: Annotated[
        Path | None,
        typer.Option(
            help="The synthetic world the rows come from (a data root with world.json), for the reference row "
            "world_utility: the test candidates scored with the world's hidden utility. Default: --data when "
            "the day split is built here from a generated world; with --trainset only when given."
        ),
    ] = None,
) -> None:
    """Train and evaluate every ablation row on one day split (train on days up to t,
    test on day t + 1 = the last day with candidates); write ablation.json (click/add-to-cart/
    order AUC and GAUC per row, the mean over --seeds), ablation.md (beside the paper's
    numbers, and each of the paper's orderings with the AUC difference, its paired
    bootstrap 95% interval over test requests and a verdict: holds, fails or within
    noise), orderings.json, seeds.json (every seed's rows), test_scores.parquet (every row's
    click scores of the exposed test candidates), offsets.json (each row's click AUC split into
    request level and order within requests), anchors.json (the click AUC that membership in
    the request's preference anchors still adds to each row), history.json (the same for hand
    features of the user's history), gbdt_importance.json (the gbdt
    row's click model: the gain of each hand feature), with --learning-curve
    learning_curve.json and .png (the rows at each training budget), with a generated world
    captured.json (what each row's click logit reproduces of each term of the world's
    utility) and a bar plot."""
    import dataclasses
    import json

    import pyarrow.parquet as pq

    from onepiece import storage
    from onepiece.errors import UserError
    from onepiece.evaluation import ablation, gbdt, learning_curve
    from onepiece.evaluation.anchor_signal import HISTORY_FEATURES, markdown_anchor_signal, markdown_history_signal
    from onepiece.evaluation.captured import markdown_captured
    from onepiece.evaluation.metrics_file import write_json
    from onepiece.evaluation.plots import bars
    from onepiece.storage import staged_dir
    from onepiece.training.data import read_training_rows

    chosen = tuple(v.strip() for v in variants.split(",")) if variants else ablation.DEFAULT_VARIANTS
    unknown = [v for v in chosen if v not in ablation.VARIANT_NAMES]
    if unknown:
        raise UserError(f"--variants: unknown rows {unknown}; expected some of {list(ablation.VARIANT_NAMES)}")
    if seeds < 1 or resamples < 1:
        raise UserError("--seeds and --resamples must be at least 1")
    cfg = ablation.AblationConfig(
        seed=seed, seeds=seeds, resamples=resamples, threads=threads, workers=workers,
        max_train_requests=max_train_requests or None, max_test_requests=max_test_requests or None,
        # Options left unset keep AblationConfig's defaults (one place for them).
        **{k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size, "patience": patience,
                             "lr_schedule": lr_schedule, "warmup_steps": warmup_steps,
                             "max_unexposed": max_unexposed}.items() if v is not None},
    )
    try:  # every row's TrainConfig is built from these: check them before any work
        ablation.row_train_config(cfg, cfg.seed)
    except ValueError as err:
        raise UserError(f"a training option (--epochs, --lr, --lr-schedule, ...): {err}") from None
    gbdt_config = gbdt.GBDTConfig()
    try:
        budgets = learning_curve.parse_budgets(curve) if curve else ()
    except ValueError as err:
        raise UserError(f"--learning-curve: {err}") from None
    with staged_dir(out) as staging:
        if trainset is None:
            if world is None and (Path(storage.data_root(data)) / "world.json").exists():
                world = Path(storage.data_root(data))
            trainset = staging / "trainset"
            split = build_day_split(storage.data_root(data), trainset, side_features)
            console.print(f"day split: train {split[0]}..{split[1]}, test {split[2]}")
        train_rows = read_training_rows(trainset / "train")
        test_rows = read_training_rows(trainset / "test")

        def report(row: dict, history: dict) -> None:
            best = (f"best epoch {history['best_epoch']}" if "best_epoch" in history
                    else f"click trees {history['best_iteration']['click']}")  # the gbdt row
            console.print(
                f"{row['variant']}: click AUC {row['click_auc']:.4f}, GAUC {row['click_gauc']:.4f} ({best})"
            )

        reference = None
        if world is not None:
            from onepiece.world.oracle import utility_parts

            def reference(test):  # noqa: ANN001, ANN202
                return utility_parts(world, test)

        result = ablation.run_ablation(
            train_rows, test_rows, cfg, chosen, on_row=report, model_overrides=parse_overrides(model_set or []),
            reference=reference, gbdt_config=gbdt_config,
        )
        rows, claims = result.rows, result.claims
        write_json({"rows": rows}, staging / "ablation.json")
        write_json({"seeds": list(ablation.training_seeds(cfg)), "claims": [c.to_json() for c in claims],
                    "gauc_claims": [c.to_json() for c in result.gauc_claims]},
                   staging / "orderings.json")
        write_json({"rows_by_seed": {str(k): v for k, v in result.seed_rows.items()}}, staging / "seeds.json")
        histories = {v: {str(k): h for k, h in by_seed.items()} for v, by_seed in result.histories.items()}
        (staging / "histories.json").write_text(json.dumps(histories, indent=2) + "\n")
        pq.write_table(result.test_scores, staging / "test_scores.parquet")
        write_json({v: p.to_json() for v, p in result.offsets.items()}, staging / "offsets.json")
        write_json({"anchors_alone_auc": result.anchors_alone_auc,
                    "rows": {v: a.to_json() for v, a in result.anchor_signal.items()}}, staging / "anchors.json")
        write_json({"features": list(HISTORY_FEATURES), "features_alone_auc": result.history_alone_auc,
                    "rows": {v: a.to_json() for v, a in result.history_signal.items()}}, staging / "history.json")
        importance = None
        if "gbdt" in result.histories:
            by_seed = {str(s): h["click_importance"] for s, h in result.histories["gbdt"].items()}
            importance = gbdt.mean_importance(list(by_seed.values()))
            write_json({"task": "click", "importance_type": "gain", "config": dataclasses.asdict(gbdt_config),
                        "mean": importance, "by_seed": by_seed}, staging / "gbdt_importance.json")
        if result.captured:
            write_json({"utility_spread": result.utility_spread,
                        "rows": {v: c.to_json() for v, c in result.captured.items()}}, staging / "captured.json")
        text = [
            "# Ablation on the synthetic world\n",
            f"Settings: {json.dumps(cfg.__dict__)}; train requests {train_rows.num_rows}, "
            f"test requests {test_rows.num_rows} (before sampling). Rows are the mean over "
            f"{cfg.seeds} training seed(s).\n",
            ablation.markdown_table(rows),
            ablation.markdown_claims(claims, cfg.seeds),
            ablation.markdown_claims(result.gauc_claims, cfg.seeds, "GAUC", ablation.GAUC_NOTE),
            ablation.markdown_offsets(result.offsets),
            markdown_anchor_signal(result.anchor_signal, result.anchors_alone_auc),
            markdown_history_signal(result.history_signal, result.history_alone_auc),
        ]
        if importance is not None:
            text.append(gbdt.markdown_importance(importance))
        if result.captured:
            text.append(markdown_captured(result.captured, result.utility_spread))
        if budgets:
            points = learning_curve.learning_curve(
                train_rows, test_rows, cfg, chosen, budgets, on_row=report,
                model_overrides=parse_overrides(model_set or []), gbdt_config=gbdt_config,
            )
            write_json({"points": points}, staging / "learning_curve.json")
            learning_curve.plot_learning_curve(points, staging / "learning_curve.png")
            text.append(learning_curve.markdown_learning_curve(points))
        (staging / "ablation.md").write_text("\n".join(text) + "\n")
        paper = {r.variant: r.paper_click_auc for r in ablation.ROWS}
        names = [r["variant"] for r in rows]
        bars(
            names,
            {"ours": [r["click_auc"] for r in rows], "paper": [paper.get(n) for n in names]},
            "click AUC by ablation row",
            "click AUC",
            staging / "ablation_click_auc.png",
        )
    console.print(f"wrote {out}/ablation.json, ablation.md, orderings.json, seeds.json, ablation_click_auc.png")
    for claim in claims:
        d = claim.difference
        interval = f" (d = {d.delta:+.4f}, 95% CI {d.low:+.4f}..{d.high:+.4f})" if d else ""
        console.print(f"{claim.verdict.upper() if claim.verdict == 'fails' else claim.verdict}: {claim.text}{interval}")


@app.command("compare")
@friendly_errors
def compare_command(
    a: Annotated[str, typer.Option("--a", help="Row A, e.g. onepiece.")],
    b: Annotated[str, typer.Option("--b", help="Row B, e.g. dlrm.")],
    runs: Annotated[
        str,
        typer.Option(help="Comma-separated `onepiece ablation --out` directories holding row A, one per split "
                     "(world or test day)."),
    ],
    b_runs: Annotated[
        str | None,
        typer.Option(help="The directories holding row B, in the same order (default: --runs); the i-th run of "
                     "each must share a split (the same test candidates)."),
    ] = None,
    resamples: Annotated[int, typer.Option(help="Request resamples of the paired bootstrap.")] = 1000,
    out: Annotated[Path | None, typer.Option(help="Also write the comparison to this JSON file.")] = None,
) -> None:
    """Click AUC and GAUC of row A minus row B with a paired bootstrap 95% interval and a
    verdict (holds, fails, within noise), read from finished runs' test_scores.parquet:
    two rows of one run, the same row in two runs on one split (--b-runs, e.g. a changed
    --set), or several splits at once, pooled (the mean of the splits' differences; each
    resample draws every split's test requests and training seeds)."""
    from rich import box
    from rich.table import Table

    from onepiece.errors import UserError
    from onepiece.evaluation.compare import METRICS, compare_runs
    from onepiece.evaluation.significance import WITHIN_NOISE, Difference
    from onepiece.storage import write_json_atomic

    if resamples < 1:
        raise UserError("--resamples must be at least 1")
    a_runs = [Path(r.strip()) for r in runs.split(",") if r.strip()]
    other = [Path(r.strip()) for r in b_runs.split(",") if r.strip()] if b_runs else a_runs
    comparison = compare_runs(a, b, a_runs, other, resamples)
    table = Table(title=f"A = {a}, B = {b}: click AUC and GAUC, paired bootstrap 95% intervals",
                  box=box.SIMPLE_HEAD)
    for column in ("split", "metric", "A", "B", "A - B", "95% interval", "verdict"):
        table.add_column(column, justify="left" if column in ("split", "metric", "verdict") else "right",
                         no_wrap=True, min_width=len(WITHIN_NOISE) if column == "verdict" else None)

    def add(name: str, metric: str, d: Difference, means: tuple[float, float] | None) -> None:
        a_mean, b_mean = (f"{m:.4f}" for m in means) if means else ("", "")
        table.add_row(name, metric.upper(), a_mean, b_mean, f"{d.delta:+.4f}",
                      f"{d.low:+.4f}..{d.high:+.4f}", d.verdict)

    for i, split in enumerate(comparison.splits, 1):
        for metric in METRICS:
            add(str(i), metric, split.difference(metric), split.means[metric])
    if len(comparison.splits) > 1:
        for metric in METRICS:
            add("pooled", metric, comparison.pooled(metric), None)
    console.print(table)
    for i, split in enumerate(comparison.splits, 1):
        same = split.a.path == split.b.path
        runs_text = split.a.path.parent if same else f"{split.a.path.parent} and {split.b.path.parent}"
        console.print(f"split {i}: {runs_text} ({len(split.a.by_seed)} seed(s))", highlight=False, soft_wrap=True)
    if out is not None:
        write_json_atomic(comparison.to_json(), out)
        console.print(f"wrote {out}")


def build_day_split(root: str, target: Path, side_features: str) -> tuple:
    """Run the Beam trainset job for days [first, t] and for day t + 1 (the last candidates
    day). Training rows are candidate requests; older events only feed their contexts."""
    from onepiece import storage
    from onepiece.assembly.jobs import run_trainset
    from onepiece.assembly.side import SnapshotSideSource
    from onepiece.errors import UserError

    days = storage.list_days(root, "candidates")
    if len(days) < 2:
        raise UserError(f"{root}/candidates: the ablation needs at least 2 days of candidates, found {len(days)}")
    if side_features == "snapshots":
        source = SnapshotSideSource(
            storage.read_table(root, "items"), storage.read_table(root, "users"), storage.read_table(root, "queries")
        )
    elif side_features == "feast":
        from onepiece.features.registry import apply
        from onepiece.features.repo import FeatureRepoConfig

        apply(FeatureRepoConfig(data_root=root))  # as `onepiece features apply` does
        source = None  # the job's default: the project's Feast repo over this data root
    else:
        raise UserError(f"--side-features must be 'feast' or 'snapshots', got {side_features!r}")
    run_trainset(root, days[0], days[-2], target / "train", side_source=source)
    run_trainset(root, days[-1], days[-1], target / "test", side_source=source)
    return days[0], days[-2], days[-1]


@app.command("ml100k")
@friendly_errors
def ml100k_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for metrics.json and plots.")],
    cache: Annotated[Path, typer.Option(help="Where the recbole wheel is downloaded.")] = Path(".cache/wheels"),
    wheel: Annotated[Path | None, typer.Option(help="Use this ml-100k wheel instead of downloading.")] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs per model.")] = 12,
    samples_per_user: Annotated[int, typer.Option(help="Training prefixes per user and epoch.")] = 30,
    seed: Annotated[int, typer.Option(help="The first training seed (the split has no randomness).")] = 0,
    seeds: Annotated[
        int,
        typer.Option(help="Training seeds per model (seed, seed+1, ...) on the same split; each costs one more "
                     "training of both models."),
    ] = 1,
    resamples: Annotated[
        int, typer.Option(help="User resamples of the paired bootstrap behind the NDCG@10 comparison's interval.")
    ] = 1000,
    threads: Annotated[int, typer.Option(help="torch CPU threads per model.")] = 1,
    workers: Annotated[int, typer.Option(help="(model, seed) trainings at once, one process each.")] = 2,
    max_users: Annotated[int | None, typer.Option(help="Evaluate the first N users only.")] = None,
) -> None:
    """MovieLens-100k, leave-one-out, full ranking: HR@10, NDCG@10, MRR@10 for onePiece
    (retrieval mode, genre side information, SD from age, gender, occupation) and a
    SASRec-style baseline, each trained with --seeds seeds. Writes metrics.json (per model
    the mean over seeds and each seed's; "comparison": onePiece's NDCG@10 minus SASRec's,
    with a paired bootstrap 95% interval over users and seeds and a verdict: holds, fails
    or within noise), test_ranks.parquet (user, model, seed, rank of the test target),
    histories.json and training curves. The data is read out of the recbole 1.2.1 wheel,
    downloaded at run time (GroupLens terms: never copied into the repository)."""
    import json

    import pyarrow.parquet as pq

    from onepiece.errors import UserError
    from onepiece.evaluation import ml100k, ml100k_data
    from onepiece.evaluation.metrics_file import write_json
    from onepiece.evaluation.plots import training_curves
    from onepiece.storage import staged_dir

    if seeds < 1 or resamples < 1:
        raise UserError("--seeds and --resamples must be at least 1")
    path = wheel or ml100k_data.fetch_wheel(cache)
    data = ml100k_data.load(path)
    split = ml100k_data.leave_one_out(data)
    cfg = ml100k.ML100kConfig(
        epochs=epochs, samples_per_user=samples_per_user, seed=seed, seeds=seeds, resamples=resamples,
        threads=threads, workers=workers, max_users=max_users,
    )
    console.print(f"MovieLens-100k: {data.n_users} users, {data.n_items} items, {len(split.users)} evaluated")

    def report(name: str, record: dict) -> None:
        console.print(
            f"{name} epoch {record['epoch']}: loss {record['train_loss']:.4f}, "
            f"val NDCG@10 {record['eval']:.4f}"
        )

    result = ml100k.run(data, split, cfg, on_epoch=report)
    comparison = ml100k.comparison(result, cfg)
    doc = ml100k.model_scores(result) | {"seeds": list(result.seeds), "comparison": comparison}
    with staged_dir(out) as staging:
        write_json(doc, staging / "metrics.json")
        pq.write_table(ml100k.ranks_table(result), staging / "test_ranks.parquet")
        histories = {n: {str(s): h for s, h in by_seed.items()} for n, by_seed in result.histories.items()}
        (staging / "histories.json").write_text(json.dumps(histories, indent=2) + "\n")
        for name, by_seed in result.histories.items():
            for s, history in by_seed.items():
                training_curves(history, staging / f"training_curves_{name}_seed{s}.png")
    console.print_json(data=doc)
    low, high = comparison["ci95"]
    console.print(
        f"NDCG@10 onePiece - SASRec-style over {len(result.seeds)} seed(s) and {comparison['users']} users: "
        f"{comparison['delta']:+.4f}, 95% interval [{low:+.4f}, {high:+.4f}], per seed "
        + ", ".join(f"{s}: {d:+.4f}" for s, d in comparison["per_seed"].items())
        + f" -> {comparison['verdict']}"
    )
