"""Benchmark: the retrieval route (item index + in-process user vectors) on a world.

Generates a world (``--items``; the default world has 5,000, the scale figure uses
100,000: a world knob, real model vectors, not random ones), trains ``onepiece_retrieval``
briefly on the days before the held-out (last candidates) day, builds the item index as
of that day's start T, and runs the route for the day's requests with contexts as of T
(as the pre-rank refresh builds them, side features from the snapshot tables).

* ``ann_recall_at_100``: mean share of each request's exact top-100 (faiss IndexFlatIP)
  that the index's top-100 holds; the queries are the route's user vectors.
* ``ann_over_exact_qps``: queries/s of the index over exact search, same queries, one
  thread each, best of ``--repeats`` interleaved rounds, by process CPU time (one thread,
  so the work done; the wall clock swung 2-7x between runs on the shared 2-core machine);
  ``ann_over_exact_qps_wall`` is the same by the wall clock.
* ``route_click_recall_at_200``, ``upstream_click_recall``: of the day's clicked
  (request, item) pairs, the share in the route's top-200 and in the upstream candidates.
  The world only logs clicks on impressions, which come from the upstream candidates, so
  the upstream's share is 1 by construction: the route's figure is the one to read.
* ``compare``: the alternatives measured for the choice (faiss IVF-Flat, faiss HNSW and
  usearch HNSW under inner product, faiss HNSW over the index's MIPS-to-L2 transform, IVF at other nprobe): recall@100, queries/s over exact, build seconds.

    .venv/bin/python benchmarks/retrieval_route.py [--items 100000 --days 3 --warmup-days 2]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onepiece import storage  # noqa: E402
from onepiece.assembly.config import AssemblyConfig  # noqa: E402
from onepiece.assembly.contexts import assemble_local  # noqa: E402
from onepiece.assembly.side import SnapshotSideSource  # noqa: E402
from onepiece.model import export_item_vectors, variant_config  # noqa: E402
from onepiece.retrieval.index import IndexConfig, build_index, exact_search, items_as_of, overlap_at_k  # noqa: E402
from onepiece.retrieval.route import RouteConfig, retrieve  # noqa: E402
from onepiece.training.config import TrainConfig  # noqa: E402
from onepiece.training.loop import train  # noqa: E402
from onepiece.world import WorldConfig, generate_world  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Best (CPU seconds, wall seconds) of ``repeats`` calls, and the last result."""
    cpu = wall = float("inf")
    out = None
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        cpu, wall = min(cpu, time.process_time() - c), min(wall, time.perf_counter() - w)
    return cpu, wall, out


def click_recall(clicks: pa.Table, source: pa.Table) -> float:
    """Share of clicked (request_id, item_id) pairs that ``source`` holds."""
    pairs = source.select(["request_id", "item_id"]).group_by(["request_id", "item_id"]).aggregate([])
    hit = clicks.join(pairs.append_column("_hit", pa.array(np.ones(pairs.num_rows, bool))),
                      ["request_id", "item_id"], join_type="left outer")
    return float(pc.sum(pc.fill_null(hit["_hit"], False)).as_py() or 0) / max(clicks.num_rows, 1)


def compare(ids, z, queries, exact_ids, exact_s: float, k: int, repeats: int) -> dict:
    """The alternatives to the chosen index, each against the same exact figures."""
    import faiss

    faiss.omp_set_num_threads(1)
    out = {}
    for nprobe in (16, 32, 128):
        index = build_index(ids, z, IndexConfig(nprobe=nprobe))
        s, _, (found, _) = timed(lambda: index.search(queries, k), repeats)
        out[f"faiss_ivf_nprobe{nprobe}"] = {"recall": overlap_at_k(found, exact_ids), "over_exact_qps": exact_s / s}
    ivf_ip = faiss.IndexIVFFlat(faiss.IndexFlatIP(z.shape[1]), z.shape[1], index.index.nlist,
                                faiss.METRIC_INNER_PRODUCT)  # without the MIPS-to-L2 transform
    ivf_ip.train(z)
    ivf_ip.add(z)
    ivf_ip.nprobe = 64
    s, _, (_, rows) = timed(lambda: ivf_ip.search(queries, k), repeats)
    out["faiss_ivf_ip_nprobe64"] = {"recall": overlap_at_k(ids[rows], exact_ids), "over_exact_qps": exact_s / s}
    began = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(z.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 200
    hnsw.add(z)
    build = time.perf_counter() - began
    for ef in (128, 256):
        hnsw.hnsw.efSearch = ef
        s, _, (_, rows) = timed(lambda: hnsw.search(queries, k), repeats)
        out[f"faiss_hnsw32_ef{ef}"] = {"recall": overlap_at_k(ids[rows], exact_ids), "over_exact_qps": exact_s / s,
                                       "build_s": build}
    from onepiece.retrieval.index import augment_items, augment_queries

    began = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(z.shape[1] + 1, 32)  # L2 over the same transform as the IVF
    hnsw.hnsw.efConstruction = 200
    hnsw.add(augment_items(z, float(np.linalg.norm(z, axis=1).max())))
    build = time.perf_counter() - began
    hnsw.hnsw.efSearch = 256
    s, _, (_, rows) = timed(lambda: hnsw.search(augment_queries(queries), k), repeats)
    out["faiss_hnsw32_l2aug_ef256"] = {"recall": overlap_at_k(ids[rows], exact_ids), "over_exact_qps": exact_s / s,
                                       "build_s": build}
    try:
        from usearch.index import Index
    except ImportError:  # pip install -e '.[bench]'
        out["usearch"] = {"recall": float("nan"), "over_exact_qps": float("nan")}
        return {name: {k: round(float(v), 3) for k, v in d.items()} for name, d in out.items()}
    began = time.perf_counter()
    u = Index(ndim=z.shape[1], metric="ip", dtype="f32", connectivity=32, expansion_add=200)
    u.add(np.arange(len(ids)), z, threads=1)
    build = time.perf_counter() - began
    for ef in (128, 256):
        u.expansion_search = ef
        s, _, matches = timed(lambda: u.search(queries, k, threads=1), repeats)
        out[f"usearch_hnsw32_ef{ef}"] = {"recall": overlap_at_k(ids[matches.keys.astype(np.int64)], exact_ids),
                                         "over_exact_qps": exact_s / s, "build_s": build}
    return {name: {k: round(float(v), 3) for k, v in d.items()} for name, d in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="An existing world (default: generate one).")
    parser.add_argument("--items", type=int, default=WorldConfig.n_items)
    parser.add_argument("--days", type=int, default=WorldConfig.days)
    parser.add_argument("--warmup-days", type=int, default=WorldConfig.warmup_days)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-days", type=int, default=2, help="Days before the held-out day to train on.")
    parser.add_argument("--train-requests", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=1000, help="User vectors timed against the index.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compare", action="store_true", help="Skip the HNSW / other-nprobe alternatives.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = args.data
        if root is None:
            root = Path(scratch) / "world"
            world = WorldConfig(seed=args.seed, n_items=args.items, days=args.days, warmup_days=args.warmup_days)
            began = time.perf_counter()
            generate_world(world, root)
            print(f"world: {args.items} items in {time.perf_counter() - began:.1f} s", flush=True)
        r = str(root)
        items = storage.read_table(r, "items")
        side = SnapshotSideSource(items, storage.read_table(r, "users"), storage.read_table(r, "queries"))
        events = storage.read_table(r, "events")
        days = storage.list_days(r, "candidates")
        held_out = days[-1]
        t = dt.datetime.combine(held_out, dt.time(), dt.UTC)

        train_rows, _ = assemble_local(storage.read_table(r, "candidates", days[-1 - args.train_days : -1]),
                                       events, side, AssemblyConfig())
        rng = np.random.default_rng(args.seed)
        pick = np.sort(rng.choice(train_rows.num_rows, min(args.train_requests + 300, train_rows.num_rows), False))
        sample = train_rows.take(pa.array(pick))
        model_config = variant_config("onepiece_retrieval")
        began = time.perf_counter()
        result = train(model_config, TrainConfig(epochs=args.epochs, threads=1, seed=args.seed),
                       sample.slice(300), sample.slice(0, 300))
        model = result.model
        print(f"trained on {sample.num_rows - 300} requests in {time.perf_counter() - began:.1f} s", flush=True)

        held_cands = storage.read_table(r, "candidates", [held_out])
        contexts, _ = assemble_local(held_cands, events, side, AssemblyConfig(), as_of=t,
                                     window=(t, t + dt.timedelta(days=1)))
        catalogue = items_as_of(items, t)
        ids, z = export_item_vectors(model, catalogue)
        began = time.perf_counter()
        index = build_index(ids, z, IndexConfig())
        build_s = time.perf_counter() - began
        print(f"index: {index.size} items, {index.index.nlist} lists, built in {build_s:.1f} s", flush=True)

        began = time.perf_counter()
        routed = retrieve(model, index, contexts, RouteConfig(top_n=200))
        route_s = time.perf_counter() - began
        clicks = events.filter(pc.equal(events["event_type"], "click"))
        clicks = clicks.filter(pc.is_in(clicks["request_id"], contexts["request_id"]))
        clicks = clicks.select(["request_id", "item_id"]).group_by(["request_id", "item_id"]).aggregate([])

        from onepiece.model.retrieval import user_vectors

        queries = user_vectors(model, contexts.slice(0, args.queries))
        k = 100
        exact_s = ann_s = exact_w = ann_w = float("inf")
        for _ in range(args.repeats):  # interleaved: the load moves both alike
            cpu, wall, (exact_ids, _) = timed(lambda: exact_search(ids, z, queries, k), 1)
            exact_s, exact_w = min(exact_s, cpu), min(exact_w, wall)
            cpu, wall, (ann_ids, _) = timed(lambda: index.search(queries, k), 1)
            ann_s, ann_w = min(ann_s, cpu), min(ann_w, wall)
        result_doc = {
            "items": index.size,
            "requests": contexts.num_rows,
            "queries": len(queries),
            "ann_recall_at_100": round(overlap_at_k(ann_ids, exact_ids), 4),
            "ann_over_exact_qps": round(exact_s / ann_s, 2),
            "ann_over_exact_qps_wall": round(exact_w / ann_w, 2),
            "exact_qps": round(len(queries) / exact_s, 1),  # per CPU second
            "ann_qps": round(len(queries) / ann_s, 1),
            "index_build_s": round(build_s, 2),
            "index": {"nlist": int(index.index.nlist), "nprobe": index.probes(k)},
            "route_s": round(route_s, 2),
            "route_click_recall_at_200": round(click_recall(clicks, routed), 4),
            "upstream_click_recall": round(click_recall(clicks, held_cands), 4),
            "clicks": clicks.num_rows,
        }
        if not args.no_compare:
            result_doc["compare"] = compare(ids, z, queries, exact_ids, exact_s, k, args.repeats)
    print(json.dumps(result_doc))


if __name__ == "__main__":
    main()
