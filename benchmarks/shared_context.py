"""Benchmark: shared-context scoring against today's per-group sequences, in process.

The same model (the shared-context mask, ``context_sees_candidates=False``) and the same
requests are scored two ways by ``score()``:

* per group: every group of C candidates is its own sequence [IH | PA | SD | CIS] and
  re-encodes the request's context (what every path did before; the product mask's cost);
* shared: each request's context is encoded once and its groups go against the cached
  keys and values in micro-batches (``ModelInputs.group_context``).

Requests have full-length contexts (IH 100, PA 90, SD 2: 198 tokens, the serving worst
case) and 200 or 1,000 candidates. One torch thread (what a Triton CPU instance runs
with). Each figure is the best of ``--repeats`` interleaved rounds, on the wall clock and
on process CPU time; FLOPs are counted by torch's FlopCounterMode over the same score()
call (attention included, see ``model_forward``), so each path's share of the GEMM peak
is printed beside its speed. The last stdout line is one JSON object: ``speedup_200``,
``speedup_1000`` (shared over per-group candidates/s), ``max_abs_diff`` (shared against
per-group probabilities, float32), ``train_speedup`` (training candidates/s of the
shared-context model on whole requests over the product model on per-group batches,
same rows; a candidate counts once per epoch), and per figure its GFLOP/s and peak share.

``triton_over_inprocess_shared``: the same shared-context model exported (shared-context
layout, one CPU instance, one torch thread) and served by the real embedded tritonserver;
candidates/s of ``TritonRankerClient.score_contexts`` over gRPC (each request's context
sent once, bundles merged by the dynamic batcher) over in-process ``tensorize`` plus
``score()`` on the same 200-candidate requests, interleaved in the same run
(``--no-triton`` skips it).

    .venv/bin/python benchmarks/shared_context.py [--repeats 5] [--quick] [--no-triton]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_forward import CPU_ATTENTION_FLOPS, best_times, context_rows, gemm_peak_gflops  # noqa: E402

from onepiece.contract.schemas import TRAINING_SCHEMA  # noqa: E402
from onepiece.model import ModelInputs, OnePiece, score, tensorize, variant_config  # noqa: E402
from onepiece.training.batches import epoch_batches  # noqa: E402
from onepiece.training.config import TrainConfig  # noqa: E402
from onepiece.training.fit import batch_loss  # noqa: E402


def score_flops(model: OnePiece, x: ModelInputs) -> int:
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter:
        score(model, x)
    return counter.get_total_flops()


def training_rows(n: int, n_cands: int, exposed: int, seed: int = 0) -> pa.Table:
    """``context_rows`` with labels: the first ``exposed`` candidates shown, some clicked."""
    rows = context_rows(n, 100, 30, n_cands, seed)
    rng = np.random.default_rng(seed)
    shown = np.zeros((n, n_cands), np.int64)
    shown[:, :exposed] = 1
    click = shown * (rng.random((n, n_cands)) < 0.2)
    order = click * (rng.random((n, n_cands)) < 0.3)
    labels = {"impression": shown, "click": click, "add_to_cart": order, "order": order}
    for task, values in labels.items():
        rows = rows.append_column(f"label_{task}", pa.array(values.tolist(), pa.list_(pa.int8())))
    return rows.select(TRAINING_SCHEMA.names).cast(TRAINING_SCHEMA)


def training_candidates_per_s(variant: str, rows: pa.Table, repeats: int) -> tuple[float, float]:
    """Candidates per second (wall, CPU) of one training epoch: batches (sampling and
    tensorizing), forward, loss, backward and the optimiser step."""
    config = variant_config(variant)
    train_config = TrainConfig(batch_size=64, max_unexposed=20)
    torch.manual_seed(0)
    model = OnePiece(config).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    counted: list[int] = []

    def epoch() -> None:
        counted.clear()
        for batch in epoch_batches(rows, config, train_config, 1):
            loss = batch_loss(model, batch)["total"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            counted.append(int(batch.inputs.cand_len.sum()))

    wall, cpu = best_times({"epoch": epoch}, repeats)["epoch"]
    return sum(counted) / wall, sum(counted) / cpu


def triton_over_inprocess(model: OnePiece, table: pa.Table, repeats: int) -> dict[str, float]:
    """Shared path: Triton gRPC candidates/s over in-process candidates/s, same requests."""
    from onepiece.model import save_checkpoint
    from onepiece.serving.client import TritonClientConfig, TritonRankerClient, scatter_to_candidates
    from onepiece.serving.export import ExportConfig, export_checkpoint
    from onepiece.serving.server import TritonServerConfig, embedded_triton

    with tempfile.TemporaryDirectory(prefix="shared-triton-") as tmp:
        checkpoint = save_checkpoint(model, Path(tmp) / "checkpoint")
        repo = Path(tmp) / "model_repo"
        export_checkpoint(checkpoint, repo, version=1, config=ExportConfig(instance_kind="cpu", cpu_threads=1))
        with embedded_triton(TritonServerConfig(repo)) as server:
            with TritonRankerClient(TritonClientConfig((server.grpc_url,))) as client:
                served = client.preflight((checkpoint / "config.json").read_text())
                assert served.layout == "shared_context", served.layout

                def inprocess() -> dict[str, torch.Tensor]:
                    return score(model, tensorize(table, model.config, fixed_shape=True, shared_context=True))

                times = best_times({"inprocess": inprocess, "triton": lambda: client.score_contexts(table)}, repeats)
                local = inprocess()
                x = tensorize(table, model.config, fixed_shape=True, shared_context=True)
                want = scatter_to_candidates({f"p_{t}": p.numpy() for t, p in local.items()},
                                             x.cand_flat_index.numpy(), table)
                got = client.score_contexts(table)
                diff = max(float(np.abs(got[k] - want[k]).max()) for k in want)
    total = int(sum(len(c) for c in table.column("cand_item_id").to_pylist()))
    return {
        "triton_over_inprocess_shared": round(times["inprocess"][0] / times["triton"][0], 3),
        "triton_shared_candidates_per_s": round(total / times["triton"][0], 1),
        "inprocess_shared_candidates_per_s": round(total / times["inprocess"][0], 1),
        "triton_shared_max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--candidates", default="200,1000", help="candidates per request")
    parser.add_argument("--total", type=int, default=4000, help="about this many candidates per figure")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--no-triton", action="store_true", help="skip the Triton figure")
    parser.add_argument("--triton-only", action="store_true", help="only the Triton figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.total = 1, 400
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    peak, peak_cpu = gemm_peak_gflops(args.repeats)
    config = variant_config("onepiece", context_sees_candidates=False)
    model = OnePiece(config).eval()
    print(f"GEMM peak (1 thread): {peak:.1f} GFLOP/s wall, {peak_cpu:.1f} per CPU-second")

    result: dict[str, object] = {"threads": 1, "group_size": config.group_size, "gemm_peak_gflops": round(peak, 2)}
    if not args.no_triton:
        n_requests = max(1, args.total // 200)
        table = context_rows(n_requests, config.ih_max_len, config.pa_per_group, 200)
        triton = triton_over_inprocess(model, table, args.repeats)
        result.update(triton)
        print(
            f"Triton gRPC, shared layout ({n_requests} requests x 200 candidates): "
            f"{triton['triton_shared_candidates_per_s']:.0f} cand/s against "
            f"{triton['inprocess_shared_candidates_per_s']:.0f} in process: "
            f"{triton['triton_over_inprocess_shared']:.2f}x (max abs diff {triton['triton_shared_max_abs_diff']:.1e})"
        )
        if args.triton_only:
            print(json.dumps(result))
            return
    max_diff = 0.0
    for n_cands in (int(c) for c in args.candidates.split(",")):
        n_requests = max(1, args.total // n_cands)
        table = context_rows(n_requests, config.ih_max_len, config.pa_per_group, n_cands)
        per_group = tensorize(table, config, fixed_shape=True)
        shared = tensorize(table, config, fixed_shape=True, shared_context=True)
        a, b = score(model, per_group), score(model, shared)
        max_diff = max(max_diff, max(float((a[t] - b[t]).abs().max()) for t in a))
        times = best_times({"per_group": lambda: score(model, per_group), "shared": lambda: score(model, shared)},
                           args.repeats)
        flops = {"per_group": score_flops(model, per_group), "shared": score_flops(model, shared)}
        total = n_requests * n_cands
        figure: dict[str, float] = {}
        for path in ("per_group", "shared"):
            wall, cpu = times[path]
            figure[f"{path}_candidates_per_s"] = round(total / wall, 1)
            figure[f"{path}_mflop_per_candidate"] = round(flops[path] / total / 1e6, 3)
            figure[f"{path}_gflops"] = round(flops[path] / wall / 1e9, 2)
            figure[f"{path}_peak_share"] = round(flops[path] / wall / 1e9 / peak, 3)
            figure[f"{path}_peak_share_cpu"] = round(flops[path] / cpu / 1e9 / peak_cpu, 3)
        speedup = times["per_group"][0] / times["shared"][0]
        speedup_cpu = times["per_group"][1] / times["shared"][1]
        print(
            f"{n_requests} requests x {n_cands} candidates: per group {figure['per_group_candidates_per_s']:.0f} "
            f"cand/s ({figure['per_group_peak_share']:.0%} of peak), shared {figure['shared_candidates_per_s']:.0f} "
            f"cand/s ({figure['shared_peak_share']:.0%} of peak): {speedup:.2f}x (CPU time {speedup_cpu:.2f}x); "
            f"FLOPs per candidate {figure['per_group_mflop_per_candidate']:.2f} -> "
            f"{figure['shared_mflop_per_candidate']:.2f} M"
        )
        result[f"speedup_{n_cands}"] = round(speedup, 3)
        result[f"speedup_{n_cands}_cpu"] = round(speedup_cpu, 3)
        result[f"at_{n_cands}"] = figure
    result["max_abs_diff"] = max_diff

    # Training: the product mask's per-group batches against whole requests in the shared
    # layout, same rows (200 candidates, 20 shown, <= 20 unexposed kept: ~4 groups each).
    rows = training_rows(max(8, args.total // 40), 200, 20)
    per_group = training_candidates_per_s("onepiece", rows, max(1, args.repeats // 2))
    shared = training_candidates_per_s("onepiece_shared", rows, max(1, args.repeats // 2))
    result["train_per_group_candidates_per_s"] = round(per_group[0], 1)
    result["train_shared_candidates_per_s"] = round(shared[0], 1)
    result["train_speedup"] = round(shared[0] / per_group[0], 3)
    result["train_speedup_cpu"] = round(shared[1] / per_group[1], 3)
    print(f"training ({rows.num_rows} requests): per group {per_group[0]:.0f} cand/s, shared {shared[0]:.0f} "
          f"cand/s: {result['train_speedup']:.2f}x (CPU time {result['train_speedup_cpu']:.2f}x)")
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
