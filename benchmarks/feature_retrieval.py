"""Benchmark: point-in-time side features for 100k and 1M candidate rows.

Writes synthetic snapshot tables (items, users, queries) and candidate rows with one
scoring time T into a temporary data root, applies the project's feature repository
there, and times, in this run:

- ours: ``onepiece.features.side_features`` (dedupe, then Feast) for every candidate
  row's item, user and query, asked the default way, on the repository's offline store:
  Feast's DuckDB store with its join replaced by an ASOF JOIN
  (``onepiece.features.asof_store``), which is asked PLAIN (one call per kind);
- stock: ours on Feast's own DuckDB store (``type: duckdb``, its ibis join), the same
  registry and sources, asked the STACKED way there (small kinds share one call, the
  answer is put back in key order by a row number); its output must equal ours;
- before: PLAIN on the stock store with Feast coercing the entity times again
  (``coerce_tz_aware`` on), i.e. the path before issue 22;
- duckdb: one hand-written DuckDB query doing the same point-in-time join (dedupe,
  ASOF join strictly before T, ttl, defaults): the floor we measure ourselves against;
  its output is checked to be identical to ours;
- feast_file: Feast's default file (Dask) offline store, used the plain way
  (``get_historical_features`` on the candidate rows, per entity kind), on
  ``--file-rows`` candidate rows (default 100k); the speedup compares it with ours on
  the same rows.

Besides the refresh (one T for every row) it measures training-style rows, where each
request has its own as-of time and deduplication saves less.

ours, stock, before and duckdb run interleaved, ``--repeats`` rounds in this one process
(the machine is shared): the ratios compare the best wall seconds of each, and, as a
figure that other load moves less, the best CPU seconds of this process (DuckDB's
threads included).

Prints figures and, as the LAST stdout line, one JSON object with rows,
ours_rows_per_s, feast_file_rows_per_s, speedup_vs_feast_file, duckdb_rows_per_s,
ours_over_duckdb (wall), ours_over_duckdb_cpu, stock_over_duckdb (wall),
stock_over_duckdb_cpu, ours_over_stock, ours_over_before,
before_over_duckdb and per-size figures.

    .venv/bin/python benchmarks/feature_retrieval.py [--rows 100000,1000000] [--file-rows 100000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onepiece.contract.schemas import (  # noqa: E402
    ITEM_FEATURES,
    ITEMS_SCHEMA,
    QUERIES_SCHEMA,
    QUERY_FEATURES,
    TIMESTAMP,
    USER_FEATURES,
    USERS_SCHEMA,
)
from onepiece.features import (  # noqa: E402
    EntityRequest,
    FeatureRepoConfig,
    open_store,
    side_features,
)
from onepiece.features.asof_store import STORE_TYPE  # noqa: E402
from onepiece.features.registry import apply  # noqa: E402
from onepiece.features.repo import PROJECT_REPO  # noqa: E402
from onepiece.features.retrieval import Retrieval  # noqa: E402
from onepiece.storage import write_parquet  # noqa: E402

T = dt.datetime(2026, 11, 8, tzinfo=dt.UTC)
DAY_US = 86_400_000_000
TTL_DAYS = {"items": 2, "users": 365, "queries": 2}  # features/feature_views.py


def log(message: str) -> None:
    print(message, flush=True)


def _stamps(rng: np.random.Generator, n: int, days_back: int) -> pa.Array:
    """Random times in [T - days_back, T + 1 day): some after T, which must stay invisible."""
    t_us = int(T.timestamp() * 1_000_000)
    offsets = rng.integers(-days_back * DAY_US, DAY_US, size=n)
    return pa.array(t_us + offsets, pa.int64()).cast(TIMESTAMP)


def write_world(root: Path, n_items: int, n_users: int, n_queries: int, seed: int = 0) -> None:
    """Snapshot tables: ~3 snapshots per item and query over 4 days, 1-2 per user."""
    rng = np.random.default_rng(seed)
    item_ids = np.repeat(np.arange(n_items), 3)
    items = {
        "item_id": item_ids,
        "shop_id": item_ids // 20,
        "category_id": item_ids % 500,
        "price": rng.gamma(2.0, 20.0, item_ids.size),
        "ctr_7d": rng.random(item_ids.size, dtype=np.float32) * 0.1,
        "cvr_7d": rng.random(item_ids.size, dtype=np.float32) * 0.02,
        "sales_30d": rng.integers(0, 1000, item_ids.size),
    }
    items["event_timestamp"] = _stamps(rng, item_ids.size, 4)
    write_parquet(pa.table(items).cast(ITEMS_SCHEMA), root / "items" / "part-0.parquet")

    user_ids = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n_users // 2)])
    users = {
        "user_id": user_ids,
        "age_bucket": (user_ids % 7).astype(np.int32),
        "gender": (user_ids % 2).astype(np.int32),
        "region_id": user_ids % 40,
        "event_timestamp": _stamps(rng, user_ids.size, 300),
    }
    write_parquet(pa.table(users).cast(USERS_SCHEMA), root / "users" / "part-0.parquet")

    query_ids = np.repeat(np.arange(n_queries), 3)
    queries = {
        "query_id": query_ids,
        "query_text": pa.array([f"query {q}" for q in query_ids]),
        "popularity_7d": rng.random(query_ids.size, dtype=np.float32),
        "event_timestamp": _stamps(rng, query_ids.size, 4),
    }
    write_parquet(pa.table(queries).cast(QUERIES_SCHEMA), root / "queries" / "part-0.parquet")


def candidate_rows(
    n_rows: int, n_items: int, n_users: int, n_queries: int, seed: int, per_row_times: bool = False
) -> pa.Table:
    """Requests of 100 candidates; items skewed to the head (popular items recur);
    ids beyond the catalogue exist too (unknown entities). ``as_of`` is T for every row
    (a refresh) or, with ``per_row_times``, each request's own time in the day before T
    (training rows)."""
    rng = np.random.default_rng(seed)
    n_requests = max(1, n_rows // 100)
    request = np.repeat(np.arange(n_requests), 100)[:n_rows]
    t_us = int(T.timestamp() * 1_000_000)
    request_us = np.full(n_requests, t_us)
    if per_row_times:
        request_us -= rng.integers(0, DAY_US, n_requests)
    return pa.table(
        {
            "item_id": (n_items * 1.01 * rng.random(n_rows) ** 2).astype(np.int64),
            "user_id": rng.integers(0, int(n_users * 1.01), n_requests)[request],
            "query_id": rng.integers(0, int(n_queries * 1.01), n_requests)[request],
            "as_of": pa.array(request_us[request], pa.int64()).cast(TIMESTAMP),
        }
    )


def ours(repo: FeatureRepoConfig, store, cands: pa.Table, retrieval=Retrieval.STACKED):
    as_of = cands["as_of"]
    if pc.count_distinct(as_of).as_py() == 1:  # a refresh: one T
        as_of = as_of[0].as_py()
    request = EntityRequest(
        item_ids=cands["item_id"], user_ids=cands["user_id"], query_ids=cands["query_id"],
        item_as_of=as_of, user_as_of=as_of, query_as_of=as_of,
    )
    start = time.perf_counter()
    result = side_features(repo, request, store=store, retrieval=retrieval)
    return time.perf_counter() - start, result


def before_issue22(repo: FeatureRepoConfig, store, cands: pa.Table):
    """PLAIN with Feast coercing entity times (copy and convert), as before issue 22."""
    store.config.coerce_tz_aware = True
    try:
        return ours(repo, store, cands, Retrieval.PLAIN)
    finally:
        store.config.coerce_tz_aware = False


def duckdb_direct(root: Path, cands: pa.Table) -> tuple[float, dict[str, pa.Table]]:
    """The same point-in-time join written directly in DuckDB SQL."""
    import duckdb

    kinds = {
        "items": ("item_id", ITEM_FEATURES),
        "users": ("user_id", USER_FEATURES),
        "queries": ("query_id", QUERY_FEATURES),
    }
    start = time.perf_counter()
    con = duckdb.connect()
    con.register("cands", cands)
    out: dict[str, pa.Table] = {}
    for table, (key, specs) in kinds.items():
        ttl = f"INTERVAL {TTL_DAYS[table]} DAY"
        selects = ", ".join(
            f"CASE WHEN f.event_timestamp >= k.as_of - INTERVAL 1 MICROSECOND - {ttl} "
            f"THEN f.{s.name} END AS {s.name}"
            for s in specs
        )
        query = f"""
            WITH k AS (SELECT DISTINCT {key}, as_of FROM cands),
            f AS (SELECT {key}, event_timestamp, {", ".join(s.name for s in specs)}
                  FROM read_parquet('{root}/{table}/*.parquet'))
            SELECT k.{key}, k.as_of, {selects}
            FROM k ASOF LEFT JOIN f ON k.{key} = f.{key} AND k.as_of > f.event_timestamp
            ORDER BY k.{key}, k.as_of
        """
        raw = con.sql(query).to_arrow_table()
        columns = [raw[key], raw["as_of"].cast(TIMESTAMP)]
        columns += [
            pc.fill_null(raw[s.name].cast(s.type), pa.scalar(s.default, s.type)) for s in specs
        ]
        out[table] = pa.table(columns, names=[key, "as_of"] + [s.name for s in specs])
    con.close()
    return time.perf_counter() - start, out


def with_offline_store(repo: FeatureRepoConfig, offline_type: str) -> FeatureRepoConfig:
    """A copy of ``repo`` whose feature_store.yaml names another offline store; same
    registry (read only here), same sources."""
    name = "features_" + offline_type.rsplit(".", 1)[-1].lower()
    copy = Path(repo.repo_dir).with_name(name)
    shutil.copytree(repo.repo_dir, copy, ignore=shutil.ignore_patterns("__pycache__"))
    yaml_path = copy / "feature_store.yaml"
    text = yaml_path.read_text()
    yaml_path.write_text(text.replace(f"type: {STORE_TYPE}", f"type: {offline_type}"))
    variant = FeatureRepoConfig(repo_dir=copy, data_root=repo.data_root)
    assert open_store(variant).config.offline_store.type == offline_type
    return variant


def feast_file_store(repo: FeatureRepoConfig, cands: pa.Table) -> float:
    """Feast's default file offline store, used plainly: one query per entity kind on
    the candidate rows, each asked just before its as-of time."""
    store = open_store(with_offline_store(repo, "file"))
    just_before = pc.subtract(cands["as_of"], pa.scalar(dt.timedelta(microseconds=1)))
    views = {
        "item_id": ("item_features", ITEM_FEATURES),
        "user_id": ("user_profile", USER_FEATURES),
        "query_id": ("query_features", QUERY_FEATURES),
    }
    start = time.perf_counter()
    for key, (view, specs) in views.items():
        entity_df = pa.table({key: cands[key], "event_timestamp": just_before}).to_pandas()
        store.get_historical_features(
            entity_df=entity_df, features=[f"{view}:{s.name}" for s in specs]
        ).to_arrow()
    return time.perf_counter() - start


def best_of(repeats: int, fn):
    """(best seconds, last result) over ``repeats`` runs: the machine is shared."""
    best, result = float("inf"), None
    for _ in range(repeats):
        seconds, result = fn()
        best = min(best, seconds)
    return best, result


def interleaved(repeats: int, fns: dict) -> dict[str, tuple[float, float, object]]:
    """Per name: (best wall s, best CPU s of this process, last result); one round runs
    every fn once, so load from other work falls on all of them alike."""
    best: dict[str, tuple[float, float, object]] = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu = time.process_time()
            wall, result = fn()
            cpu = time.process_time() - cpu
            old_wall, old_cpu, _ = best.get(name, (float("inf"), float("inf"), None))
            best[name] = (min(old_wall, wall), min(old_cpu, cpu), result)
    return best


def measure(repo, store, stock_repo, stock, data: Path, cands: pa.Table, repeats: int) -> dict:
    runs = interleaved(repeats, {
        "ours": lambda: ours(repo, store, cands),
        "stock": lambda: ours(stock_repo, stock, cands),
        "before": lambda: before_issue22(stock_repo, stock, cands),
        "duckdb": lambda: duckdb_direct(data, cands),
    })
    ours_s, ours_cpu, result = runs["ours"]
    stock_s, stock_cpu, stocked = runs["stock"]
    duck_s, duck_cpu, direct = runs["duckdb"]
    identical = all(
        getattr(result, t).equals(direct[t].cast(getattr(result, t).schema)) for t in direct
    )
    n = cands.num_rows
    return {
        "ours_s": round(ours_s, 3),
        "ours_rows_per_s": round(n / ours_s),
        "duckdb_s": round(duck_s, 3),
        "duckdb_rows_per_s": round(n / duck_s),
        "ours_over_duckdb": round(duck_s / ours_s, 3),
        "stock_s": round(stock_s, 3),
        "stock_over_duckdb": round(duck_s / stock_s, 3),
        "ours_over_stock": round(stock_s / ours_s, 3),
        "ours_over_before": round(runs["before"][0] / ours_s, 3),
        "before_over_duckdb": round(duck_s / runs["before"][0], 3),
        "cpu_s": {"ours": round(ours_cpu, 3),
                  "stock": round(stock_cpu, 3), "before": round(runs["before"][1], 3),
                  "duckdb": round(duck_cpu, 3)},
        "ours_over_duckdb_cpu": round(duck_cpu / ours_cpu, 3),
        "stock_over_duckdb_cpu": round(duck_cpu / stock_cpu, 3),
        "unique_items": result.items.num_rows,
        "unknown": result.unknown,
        "identical_to_duckdb": identical,
        "identical_to_stock": all(
            getattr(result, t).equals(getattr(stocked, t)) for t in ("items", "users", "queries")
        ) and result.unknown == stocked.unknown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000", help="candidate row counts")
    parser.add_argument("--file-rows", type=int, default=100_000,
                        help="candidate rows for the file store (its rows/s fall with size)")
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=5,
                        help="interleaved rounds of ours, stock, before and DuckDB (best of N)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.rows.split(",")]
    shape = (args.items, args.users, args.queries)

    work = Path(tempfile.mkdtemp(prefix="bench_features_"))
    try:
        data = work / "data"
        write_world(data, *shape)
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(PROJECT_REPO, work / "features", ignore=ignore)
        repo = FeatureRepoConfig(repo_dir=work / "features", data_root=str(data))
        apply(repo)
        store = open_store(repo)
        assert store.config.offline_store.type == STORE_TYPE
        stock_repo = with_offline_store(repo, "duckdb")
        stock = open_store(stock_repo)
        ours(repo, store, candidate_rows(1000, *shape, seed=99))  # warm-up
        ours(stock_repo, stock, candidate_rows(1000, *shape, seed=99))
        log(f"world: {args.items} items, {args.users} users, {args.queries} queries; T = {T}")

        by_rows: dict[int, dict] = {}
        for n in sizes:
            cands = candidate_rows(n, *shape, seed=n)
            by_rows[n] = measure(repo, store, stock_repo, stock, data, cands, args.repeats)
            log(f"refresh, {n} rows: {by_rows[n]}")
        n_top = max(sizes)
        training = candidate_rows(n_top, *shape, seed=n_top, per_row_times=True)
        per_row = measure(repo, store, stock_repo, stock, data, training, args.repeats)
        log(f"per-row times (training), {n_top} rows: {per_row}")

        sample = candidate_rows(args.file_rows, *shape, seed=args.file_rows)
        file_s = feast_file_store(repo, sample)
        sample_s, _ = best_of(args.repeats, lambda: ours(repo, store, sample))
        file_rate, sample_rate = args.file_rows / file_s, args.file_rows / sample_s
        log(f"feast file store, {args.file_rows} rows: {file_s:.2f} s; "
            f"ours on the same rows: {sample_s:.3f} s")

        top = by_rows[n_top]
        figures = {
            "rows": n_top,
            "ours_rows_per_s": top["ours_rows_per_s"],
            "duckdb_rows_per_s": top["duckdb_rows_per_s"],
            "ours_over_duckdb": top["ours_over_duckdb"],
            "ours_over_duckdb_cpu": top["ours_over_duckdb_cpu"],
            "stock_over_duckdb": top["stock_over_duckdb"],
            "stock_over_duckdb_cpu": top["stock_over_duckdb_cpu"],
            "ours_over_stock": top["ours_over_stock"],
            "ours_over_before": top["ours_over_before"],
            "before_over_duckdb": top["before_over_duckdb"],
            "repeats": args.repeats,
            "feast_file_rows": args.file_rows,
            "feast_file_rows_per_s": round(file_rate, 1),
            "ours_rows_per_s_on_feast_file_rows": round(sample_rate),
            "speedup_vs_feast_file": round(sample_rate / file_rate, 2),
            "per_row_times": per_row,
            "by_rows": by_rows,
            "note": "refresh = one T for all rows; ours_over_duckdb from the best wall "
            "seconds of interleaved rounds in this run; speedup_vs_feast_file compares ours "
            "and Feast's file store on the same feast_file_rows candidate rows",
        }
        print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
