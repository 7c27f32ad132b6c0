"""Worlds shared by the world tests (generated once per session, a second or two each)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from onepiece.world import WorldConfig, WorldSummary, generate_world

# Bigger than WorldConfig.tiny so that statistical checks have enough clicks, and more
# than 7 days so that the 7-day statistics windows slide.
SMALL = WorldConfig(seed=3, n_users=300, n_items=1500, n_queries=40, days=9, n_categories=20,
                    candidates_per_request=100, impressions_per_request=20)


@dataclass(frozen=True)
class Generated:
    root: Path
    config: WorldConfig
    summary: WorldSummary

    def truth(self, name: str):  # noqa: ANN201 (pyarrow.Table)
        return pq.read_table(self.root / "_truth" / f"{name}.parquet")


@pytest.fixture(scope="session")
def tiny_generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("world") / "tiny"
    config = WorldConfig.tiny(0)
    return Generated(root, config, generate_world(config, root))


@pytest.fixture(scope="session")
def small_generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = tmp_path_factory.mktemp("world") / "small"
    return Generated(root, SMALL, generate_world(SMALL, root))
