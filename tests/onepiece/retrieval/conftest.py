"""A small world with a catalogue big enough for an index worth the name (4,000 items),
a tiny retrieval checkpoint trained on it, and its last day's contexts as of T."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from retrieval_helpers import TINY_RETRIEVAL, contexts_as_of, side_source

from onepiece import storage


@pytest.fixture(scope="session")
def route_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny world with 4,000 items (read-only; about 2 s)."""
    from onepiece.world import WorldConfig, generate_world

    root = tmp_path_factory.mktemp("route_world") / "data"
    generate_world(dataclasses.replace(WorldConfig.tiny(seed=0), n_items=4000), root)
    return root


@pytest.fixture(scope="session")
def retrieval_checkpoint(route_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """onepiece_retrieval, tiny, two epochs on the days before the held-out day."""
    from onepiece.assembly.config import AssemblyConfig
    from onepiece.assembly.contexts import assemble_local
    from onepiece.model import save_checkpoint, variant_config
    from onepiece.training.config import TrainConfig
    from onepiece.training.loop import train

    r = str(route_world)
    days = storage.list_days(r, "candidates")
    rows, _ = assemble_local(storage.read_table(r, "candidates", days[:-1]), storage.read_table(r, "events"),
                             side_source(route_world), AssemblyConfig())
    result = train(variant_config("onepiece_retrieval", **TINY_RETRIEVAL),
                   TrainConfig(epochs=2, batch_size=32, threads=1, seed=0, patience=99),
                   rows.slice(40), rows.slice(0, 40))
    return save_checkpoint(result.model, tmp_path_factory.mktemp("retrieval") / "1")


@pytest.fixture(scope="session")
def held_out_contexts(route_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The held-out day's contexts as of T, written as a contexts partition."""
    out = tmp_path_factory.mktemp("contexts") / "contexts"
    storage.write_parquet(contexts_as_of(route_world), out / "part-00000.parquet")
    return out
