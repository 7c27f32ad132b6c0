"""Benchmark: the onePiece ranking forward on this CPU, against its own GEMM peak.

Prints per-batch-size figures (candidates/s, FLOPs per candidate, GFLOP/s) and, as the
LAST stdout line, one JSON object with at least gemm_peak_gflops, forward_gflops,
peak_ratio (at the serving batch size), k3_over_k0_cached and k3_over_k0_uncached, and
k3_over_k0_flops: the FLOPs K=3 computes over K=0's on the serving path, the floor the
cached time ratio could reach only if the reasoning steps (12 rows per sequence) ran at
the base pass's FLOP rate.
All ratios are measured in this run. FLOPs are counted by torch's FlopCounterMode: the
matmuls of the forward plus attention (QK^T and AV, registered below for the CPU kernel,
which FlopCounterMode would count as 0), on full-length rows of the default serving
config, so nothing counted is padding. The GEMM peak is the best torch.matmul rate over
large square float32 GEMMs (512, 1024, 2048) with the same thread count: a peak the
model's own small GEMMs (d = 64) do not reach, not a model-shaped one.

The timed call is the serving path, ``score()`` (chunks of SCORE_CHUNK sequences); the
single-forward time of the whole batch is printed beside it. It runs with the thread
count a Triton CPU instance serves with (``ExportConfig.cpu_threads``, 1: the server
scales by instances, because threads of one instance spin against each other on a busy
host), and the GEMM peak is measured with the same count; ``--threads 0`` measures
torch's default (one thread per core) instead.

Every figure is measured on two clocks, interleaving the variants being compared and
keeping the best of ``--repeats`` rounds:

* wall clock (``perf_counter``): the plain figures and the required keys;
* process CPU time (``process_time``, summed over threads): the ``*_cpu`` keys. On a
  machine shared with other work the wall clock measures the neighbours; CPU time
  measures the work itself (GEMM and forward alike), so its ratios stay meaningful.

    .venv/bin/python benchmarks/model_forward.py [--serving-batch 256] [--threads N] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onepiece.contract.schemas import CONTEXTS_SCHEMA, ITEM_FEATURES  # noqa: E402
from onepiece.model import ModelInputs, OnePiece, score, tensorize, variant_config  # noqa: E402
from onepiece.model.model import SCORE_CHUNK  # noqa: E402
from onepiece.serving.export import ExportConfig  # noqa: E402


def best_times(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Best (wall, cpu) seconds of each function, run round-robin ``repeats`` times."""
    for fn in fns.values():
        fn()  # warm-up
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def gemm_peak_gflops(repeats: int) -> tuple[float, float]:
    """Best torch.matmul rate (wall GFLOP/s, CPU-time GFLOP/s) over a few sizes."""
    sizes = (512, 1024, 2048)
    mats = {n: (torch.randn(n, n), torch.randn(n, n)) for n in sizes}
    fns: dict[str, Callable[[], object]] = {
        str(n): functools.partial(torch.matmul, a, b) for n, (a, b) in mats.items()
    }
    times = best_times(fns, repeats)
    wall = max(2 * n**3 / times[str(n)][0] for n in sizes) / 1e9
    cpu = max(2 * n**3 / times[str(n)][1] for n in sizes) / 1e9
    return wall, cpu


def context_rows(n: int, ih: int, pa_per_group: int, cands: int, seed: int = 0) -> pa.Table:
    """Full-length synthetic context rows (the serving worst case)."""
    rng = np.random.default_rng(seed)
    as_of = dt.datetime(2026, 11, 4, tzinfo=dt.UTC)
    cols: dict[str, list] = {
        "request_id": [f"r{i}" for i in range(n)],
        "user_id": rng.integers(0, 10_000, n).tolist(),
        "query_id": rng.integers(0, 1_000, n).tolist(),
        "as_of": [as_of] * n,
        "user_age_bucket": rng.integers(0, 8, n).tolist(),
        "user_gender": rng.integers(0, 3, n).tolist(),
        "user_region_id": rng.integers(0, 50, n).tolist(),
        "query_query_text": ["red running shoes men"] * n,
        "query_popularity_7d": rng.random(n).tolist(),
        "ih_event_type": rng.integers(1, 4, (n, ih)).tolist(),
        "ih_ts": [[as_of] * ih] * n,
        "pa_group": [sorted(np.repeat(np.arange(3), pa_per_group).tolist())] * n,
    }
    for seg, length in (("ih", ih), ("pa", 3 * pa_per_group), ("cand", cands)):
        cols[f"{seg}_item_id"] = rng.integers(0, 100_000, (n, length)).tolist()
        for f in ITEM_FEATURES:
            values = rng.integers(0, 1000, (n, length)) if f.categorical or pa.types.is_integer(f.type) else rng.random((n, length))
            cols[f"{seg}_{f.name}"] = values.tolist()
    return pa.Table.from_pydict(cols, schema=CONTEXTS_SCHEMA)


#: FlopCounterMode has formulas for the CUDA attention kernels but not for the CPU one
#: SDPA dispatches to, so without this it counts attention as 0 FLOPs (a third of the
#: forward's matmul work at the default sizes). The formula is the dense QK^T + AV
#: count; the rows here are full length and the default mask hides no key from a
#: query the kernel computes (bidirectional context, visible candidates, the cache cut
#: at the current block), so every counted FLOP is real work.
def _cpu_attention_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q_shape, k_shape, v_shape)


CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops
}


def forward_flops(model: OnePiece, x: ModelInputs, serving: bool = False) -> int:
    """FLOPs of one forward; ``serving``: as ``score()`` runs it (each task's head at its
    step only), else every head at every step."""
    counter = FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
    with torch.inference_mode(), counter:
        model(x, task_steps=model.config.task_steps() if serving else None)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-batch", type=int, default=256, help="sequences of C candidates")
    parser.add_argument("--batches", default="32,256,1024")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads",
        type=int,
        default=ExportConfig().cpu_threads,
        help="torch threads for the GEMM peak and the model alike (default: what a Triton CPU "
        "instance runs with, ExportConfig.cpu_threads; 0 = torch's default, one per core)",
    )
    parser.add_argument("--d-model", type=int, default=0, help="override d (0 = the variant's 64)")
    parser.add_argument("--n-heads", type=int, default=0, help="override heads (0 = the default)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    sizes = {"d_model": args.d_model} if args.d_model else {}
    if args.n_heads:
        sizes["n_heads"] = args.n_heads
    batches = [int(b) for b in args.batches.split(",")]
    if args.quick:
        batches, args.serving_batch, args.repeats = [16], 16, 2
    if args.serving_batch not in batches:
        batches.append(args.serving_batch)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    threads = torch.get_num_threads()

    peak, peak_cpu = gemm_peak_gflops(args.repeats)
    print(f"GEMM peak (torch.matmul, float32, {threads} threads): {peak:.1f} GFLOP/s wall, "
          f"{peak_cpu:.1f} GFLOP/s per CPU-second")

    config = variant_config("onepiece", **sizes)  # the served default: K=3, C=12, IH 100, PA 90
    models = {k: OnePiece(variant_config("onepiece", num_steps=k, **sizes)).eval() for k in (0, 3)}
    table = context_rows(max(batches), config.ih_max_len, config.pa_per_group, config.group_size)
    inputs = tensorize(table, config, fixed_shape=True)
    c = config.group_size
    seq_len = inputs.ih_item_cat.shape[1] + inputs.pa_item_cat.shape[1] + 2 + c
    print(f"sequence: {seq_len} tokens (IH {config.ih_max_len}, PA {inputs.pa_item_cat.shape[1]}, "
          f"SD 2, C {c}), d={config.d_model}, L={config.n_layers}, heads={config.n_heads}, K=3")

    figures: dict[str, dict[str, float]] = {}
    model = models[3]
    for b in sorted(batches):
        x = inputs.rows(0, b)
        flops = forward_flops(model, x)
        with torch.inference_mode():
            t = best_times(
                {"score": lambda: score(model, x), "forward": lambda: model(x)}, args.repeats
            )
        wall, cpu = t["score"]
        f = figures[str(b)] = {
            "candidates_per_s": b * c / wall,
            "flops_per_candidate": flops / (b * c),
            "gflops": flops / wall / 1e9,
            "gflops_cpu": flops / cpu / 1e9,
            "ms": wall * 1e3,
            "one_forward_gflops_cpu": flops / t["forward"][1] / 1e9,
        }
        print(
            f"batch {b:5d} x C={c}: {f['ms']:8.1f} ms, {f['candidates_per_s']:9.0f} cand/s, "
            f"{f['flops_per_candidate'] / 1e6:.2f} MFLOP/cand, {f['gflops']:.1f} GFLOP/s "
            f"({f['gflops'] / peak:.0%} of GEMM peak; CPU-time {f['gflops_cpu'] / peak_cpu:.0%}; "
            f"unchunked forward CPU-time {f['one_forward_gflops_cpu'] / peak_cpu:.0%})"
        )

    x = inputs.rows(0, args.serving_batch)
    t = best_times(
        {
            "k0": lambda: score(models[0], x),
            "k3_cached": lambda: score(models[3], x, cached=True),
            "k3_uncached": lambda: score(models[3], x, cached=False),
        },
        args.repeats,
    )
    ratio = {name: t[name][0] / t["k0"][0] for name in t}
    # The floor of the cached ratio: the work K=3 adds, counted on the serving path. The
    # time ratio can only reach it if the steps' 12-row GEMMs and 12-query attention ran
    # at the base pass's FLOP rate.
    flops_ratio = forward_flops(models[3], x, serving=True) / forward_flops(models[0], x, serving=True)
    ratio_cpu = {name: t[name][1] / t["k0"][1] for name in t}
    print(
        f"batch {args.serving_batch}: K=0 {t['k0'][0] * 1e3:.1f} ms; "
        f"K=3 cached {ratio['k3_cached']:.2f}x (CPU-time {ratio_cpu['k3_cached']:.2f}x); "
        f"K=3 uncached {ratio['k3_uncached']:.2f}x (CPU-time {ratio_cpu['k3_uncached']:.2f}x); "
        f"K=3 computes {flops_ratio:.3f}x the FLOPs of K=0"
    )

    serving = figures[str(args.serving_batch)]
    result = {
        "threads": threads,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # shared machine
        "n_heads": config.n_heads,
        "serving_batch": args.serving_batch,
        "group_size": c,
        "score_chunk": SCORE_CHUNK,
        "d_model": config.d_model,
        "sequence_tokens": seq_len,
        "gemm_peak_gflops": round(peak, 2),
        "forward_gflops": round(serving["gflops"], 2),
        "peak_ratio": round(serving["gflops"] / peak, 3),
        "candidates_per_s": round(serving["candidates_per_s"], 1),
        "flops_per_candidate": int(serving["flops_per_candidate"]),
        "k3_over_k0_cached": round(ratio["k3_cached"], 3),
        "k3_over_k0_uncached": round(ratio["k3_uncached"], 3),
        "k3_over_k0_flops": round(flops_ratio, 3),
        "gemm_peak_gflops_cpu": round(peak_cpu, 2),
        "forward_gflops_cpu": round(serving["gflops_cpu"], 2),
        "peak_ratio_cpu": round(serving["gflops_cpu"] / peak_cpu, 3),
        "k3_over_k0_cached_cpu": round(ratio_cpu["k3_cached"], 3),
        "k3_over_k0_uncached_cpu": round(ratio_cpu["k3_uncached"], 3),
        "by_batch": {b: {k: round(v, 2) for k, v in f.items()} for b, f in figures.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
