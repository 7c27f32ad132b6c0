"""MovieLens-100k, read straight out of the recbole 1.2.1 wheel, split leave-one-out.

The wheel carries ``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``
(tab-separated, typed headers such as ``user_id:token``). We never install recbole (it
breaks Airflow's pins) and never copy the data into the repository (GroupLens terms):
``fetch_wheel`` downloads the wheel alone into a cache directory at run time with the
environment's own pip.

Split: each user's interactions are sorted by (timestamp, file order); the last item is
the test target, the second-last the validation target, everything before the
validation target is training data. Users with fewer than 3 interactions are dropped
(none in ml-100k; counted in ``ML100k.dropped_users``).
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from onepiece.errors import UserError

WHEEL = "recbole==1.2.1"
WHEEL_FILE = "recbole-1.2.1-py3-none-any.whl"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{kind}"
DEFAULT_CACHE = Path(".cache/wheels")
#: ml-100k's age is a raw number; bucketed like the original MovieLens-1M bins.
AGE_BINS = np.array([18, 25, 35, 45, 50, 56])


def fetch_wheel(cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """The recbole wheel in ``cache_dir``, downloaded (no dependencies) if absent."""
    cache = Path(cache_dir)
    wheel = cache / WHEEL_FILE
    if wheel.exists():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not wheel.exists():
        raise UserError(
            f"could not download {WHEEL} into {cache} (needed for MovieLens-100k): "
            f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'}"
        )
    return wheel


def _read_member(archive: zipfile.ZipFile, kind: str, source: Path) -> pa.Table:
    name = MEMBER.format(kind=kind)
    try:
        raw = archive.read(name)
    except KeyError:
        raise UserError(f"{source} has no member {name}: is it the recbole 1.2.1 wheel?") from None
    table = pacsv.read_csv(
        io.BytesIO(raw),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(
            column_types={},  # typed below from the header's names
            strings_can_be_null=False,
        ),
        read_options=pacsv.ReadOptions(encoding="latin-1"),
    )
    # Headers look like "user_id:token": keep the name only.
    return table.rename_columns([c.split(":")[0] for c in table.column_names])


@dataclass(frozen=True)
class ML100k:
    """Dense-indexed MovieLens-100k. Index 0 is reserved for padding in both id spaces."""

    n_users: int  # users are 1..n_users
    n_items: int  # items are 1..n_items
    sequences: list[np.ndarray]  # per user index - 1: item indices in time order
    item_genre: np.ndarray  # [n_items + 1] int64: id of the item's genre combination (0 = pad)
    user_age: np.ndarray  # [n_users + 1] int64 age bucket
    user_gender: np.ndarray  # [n_users + 1] int64
    user_occupation: np.ndarray  # [n_users + 1] int64
    dropped_users: int


def load(wheel: str | Path) -> ML100k:
    """Read and index ml-100k out of the wheel."""
    wheel = Path(wheel)
    if not wheel.exists():
        raise UserError(f"MovieLens wheel not found: {wheel}")
    with zipfile.ZipFile(wheel) as archive:
        inter = _read_member(archive, "inter", wheel)
        items = _read_member(archive, "item", wheel)
        users = _read_member(archive, "user", wheel)
    for table, kind, cols in (
        (inter, "inter", ("user_id", "item_id", "timestamp")),
        (items, "item", ("item_id", "class")),
        (users, "user", ("user_id", "age", "gender", "occupation")),
    ):
        missing = [c for c in cols if c not in table.column_names]
        if missing:
            raise UserError(f"{wheel}:{MEMBER.format(kind=kind)} lacks columns {missing}")

    # Dense indices from 1, ordered by raw id (numerically where the ids are numbers).
    def vocab(*columns: pa.ChunkedArray) -> dict[str, int]:
        raw = set()
        for column in columns:
            raw |= set(pc.cast(column, pa.string()).to_pylist())
        ordered = sorted(raw, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x))
        return {x: i + 1 for i, x in enumerate(ordered)}

    user_raw = np.asarray(pc.cast(users["user_id"], pa.string()))
    item_raw = np.asarray(pc.cast(items["item_id"], pa.string()))
    user_vocab = vocab(users["user_id"], inter["user_id"])
    item_vocab = vocab(items["item_id"], inter["item_id"])
    n_users, n_items = len(user_vocab), len(item_vocab)

    u = np.array([user_vocab[x] for x in pc.cast(inter["user_id"], pa.string()).to_pylist()])
    v = np.array([item_vocab[x] for x in pc.cast(inter["item_id"], pa.string()).to_pylist()])
    ts = np.asarray(pc.cast(inter["timestamp"], pa.float64()))
    order = np.lexsort((np.arange(len(u)), ts, u))  # by user, time, then file order
    u, v = u[order], v[order]
    bounds = np.flatnonzero(np.diff(u)) + 1
    per_user = dict(zip(u[np.r_[0, bounds]].tolist(), np.split(v, bounds)))
    sequences, dropped = [], 0
    for user in range(1, n_users + 1):
        seq = per_user.get(user, np.zeros(0, dtype=np.int64))
        if len(seq) < 3:
            dropped += 1
            seq = np.zeros(0, dtype=np.int64)
        sequences.append(seq.astype(np.int64))

    genre_vocab: dict[str, int] = {}
    item_genre = np.zeros(n_items + 1, dtype=np.int64)
    for raw_id, genres in zip(item_raw.tolist(), items["class"].to_pylist()):
        key = " ".join(sorted(str(genres or "").split()))
        item_genre[item_vocab[raw_id]] = genre_vocab.setdefault(key, len(genre_vocab) + 1)

    def user_column(name: str, encode) -> np.ndarray:
        out = np.zeros(n_users + 1, dtype=np.int64)
        out[[user_vocab[x] for x in user_raw.tolist()]] = encode(users[name])
        return out

    def categorical(col: pa.ChunkedArray) -> np.ndarray:
        values = pc.cast(col, pa.string()).to_pylist()
        vocab = {x: i + 1 for i, x in enumerate(sorted(set(values)))}
        return np.array([vocab[x] for x in values])

    def age_bucket(col: pa.ChunkedArray) -> np.ndarray:
        return np.digitize(np.asarray(pc.cast(col, pa.float64())), AGE_BINS) + 1

    return ML100k(
        n_users=n_users,
        n_items=n_items,
        sequences=sequences,
        item_genre=item_genre,
        user_age=user_column("age", age_bucket),
        user_gender=user_column("gender", categorical),
        user_occupation=user_column("occupation", categorical),
        dropped_users=dropped,
    )


@dataclass(frozen=True)
class LeaveOneOut:
    """Per evaluated user: input prefix and target, for validation and test."""

    users: np.ndarray  # [U] user indices with >= 3 interactions
    train: list[np.ndarray]  # per user: items before the validation target
    valid_target: np.ndarray  # [U]
    test_target: np.ndarray  # [U]


def leave_one_out(data: ML100k) -> LeaveOneOut:
    """Last item is test, second-last validation, the rest is training input."""
    users = np.array([i + 1 for i, s in enumerate(data.sequences) if len(s) >= 3], dtype=np.int64)
    seqs = [data.sequences[u - 1] for u in users]
    return LeaveOneOut(
        users=users,
        train=[s[:-2] for s in seqs],
        valid_target=np.array([s[-2] for s in seqs], dtype=np.int64),
        test_target=np.array([s[-1] for s in seqs], dtype=np.int64),
    )
