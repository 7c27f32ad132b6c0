"""Benchmark: what trimming padding inside ``score()`` saves on real contexts.

    .venv/bin/python benchmarks/score_padding.py --contexts DATA/contexts/dt=.../hour=00
    .venv/bin/python benchmarks/score_padding.py [--world default|tiny]   # builds a world first

Requests reach ``score()`` padded to fixed shapes (``tensorize(fixed_shape=True)``, as on
the Triton wire: IH 100, PA 96, C 12), while real contexts are shorter. On exactly the
given contexts, with a freshly initialised model of the product variant (speed does not
depend on the weights), this times the in-process path of ``triton_scoring.py``
(tensorize + score in batches of 256, one torch thread) with ``trim=True`` (sequences
chunked in length order, each chunk cut to its longest real segment lengths) and
``trim=False`` (the fixed shapes), in interleaved rounds, best of each, on the wall
clock and on process CPU time. It also prints the real, padded and trimmed tokens per
sequence and the largest score difference between the two.

The last stdout line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onepiece.contract.schemas import TASKS  # noqa: E402
from onepiece.model import OnePiece, score, tensorize, variant_config  # noqa: E402
from onepiece.model.model import SCORE_CHUNK  # noqa: E402


def read_contexts(directory: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(directory.glob("*.parquet"))).combine_chunks()


def sequence_lengths(inputs, batch: int, trim: bool) -> float:
    """Mean tokens per sequence the model runs over (IH + PA + SD + C), chunked as
    ``score()`` chunks each batch of ``batch`` sequences."""
    total = 0
    for first in range(0, inputs.batch_size, batch):
        x = inputs.rows(first, min(first + batch, inputs.batch_size))
        if trim and x.batch_size > SCORE_CHUNK:
            x = x.select(x.length_order())
        for start in range(0, x.batch_size, SCORE_CHUNK):
            chunk = x.rows(start, min(start + SCORE_CHUNK, x.batch_size))
            if trim:
                chunk = chunk.trim_padding()
            n = chunk.ih_item_cat.shape[1] + chunk.pa_item_cat.shape[1] + 2 + chunk.cand_item_cat.shape[1]
            total += n * chunk.batch_size
    return total / inputs.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=Path, help="a directory of context parquet files")
    parser.add_argument("--world", choices=("default", "tiny"), default="default", help="without --contexts")
    parser.add_argument("--batch", type=int, default=256, help="sequences per score() call")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds, best kept")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-padding-") as tmp:
        if args.contexts is None:
            from triton_scoring import build_inputs

            _, args.contexts, _ = build_inputs(Path(tmp), args.world, 1)
        contexts = read_contexts(args.contexts)

    torch.manual_seed(0)
    model = OnePiece(variant_config("onepiece")).eval()
    inputs = tensorize(contexts, model.config, fixed_shape=True)
    b = inputs.batch_size
    n_cands = int(inputs.cand_len.sum())

    def run(trim: bool) -> dict[str, torch.Tensor]:
        x = tensorize(contexts, model.config, fixed_shape=True)
        parts = [
            score(model, x.select(torch.arange(i, min(i + args.batch, b))), trim=trim)
            for i in range(0, b, args.batch)
        ]
        return {task: torch.cat([p[task] for p in parts]) for task in TASKS}

    trimmed, padded = run(True), run(False)  # warm-up, and the equality check
    max_diff = max(float((trimmed[t] - padded[t]).abs().max()) for t in TASKS)
    best = {True: (float("inf"), float("inf")), False: (float("inf"), float("inf"))}
    for round_ in range(args.repeats):
        for trim in (True, False) if round_ % 2 else (False, True):
            wall, cpu = time.perf_counter(), time.process_time()
            run(trim)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[trim] = (min(best[trim][0], wall), min(best[trim][1], cpu))
    figures = {
        "contexts": str(args.contexts),
        "requests": contexts.num_rows,
        "sequences": b,
        "candidates": n_cands,
        "mean_ih_len": round(float(inputs.ih_len.float().mean()), 1),
        "mean_pa_len": round(float(inputs.pa_len.float().mean()), 1),
        "real_tokens_per_sequence": round(float((inputs.ih_len + inputs.pa_len + 2 + inputs.cand_len).float().mean()), 1),
        "padded_tokens_per_sequence": round(sequence_lengths(inputs, args.batch, False), 1),
        "trimmed_tokens_per_sequence": round(sequence_lengths(inputs, args.batch, True), 1),
        "inprocess_cands_per_s_padded": round(n_cands / best[False][0], 1),
        "inprocess_cands_per_s_trimmed": round(n_cands / best[True][0], 1),
        "trimmed_over_padded": round(best[False][0] / best[True][0], 3),
        "trimmed_over_padded_cpu": round(best[False][1] / best[True][1], 3),
        "max_abs_score_diff": max_diff,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(
        f"{b} sequences, {n_cands} candidates: {figures['padded_tokens_per_sequence']} tokens/sequence "
        f"padded, {figures['trimmed_tokens_per_sequence']} trimmed; in-process "
        f"{figures['inprocess_cands_per_s_padded']:.0f} -> {figures['inprocess_cands_per_s_trimmed']:.0f} "
        f"cand/s ({figures['trimmed_over_padded']:.2f}x, CPU-time {figures['trimmed_over_padded_cpu']:.2f}x); "
        f"max |score diff| {max_diff:.1e}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
