"""The production side-feature source: the Feast helper's ``side_features`` function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from onepiece.assembly.side import SideTables


@dataclass(frozen=True)
class FeastSideSource:
    """Point-in-time side features from the project's Feast repository (picklable).

    ``repo_dir`` None means the project's ``features/`` repo; ``data_root`` None means
    $ONEPIECE_DATA. The keys arrive deduplicated, each with its own as_of. ``yaml_name``
    None means the profile of $ONEPIECE_FEAST_PROFILE where the source is built (the
    driver), so workers on a cluster use the driver's profile whatever their own
    environment says; the profile's addresses come from the workers' environment.
    """

    data_root: str | None = None
    repo_dir: str | None = None
    feature_service: str | None = None
    yaml_name: str | None = None

    def __post_init__(self) -> None:
        if self.yaml_name is None:
            from onepiece.features.repo import profile_yaml

            object.__setattr__(self, "yaml_name", profile_yaml())

    def repo(self):
        from onepiece.features.repo import FeatureRepoConfig

        kwargs = {"data_root": self.data_root, "yaml_name": self.yaml_name}
        if self.repo_dir is not None:
            kwargs["repo_dir"] = Path(self.repo_dir)
        if self.feature_service is not None:
            kwargs["feature_service"] = self.feature_service
        return FeatureRepoConfig(**kwargs)

    def check(self) -> None:
        """Fail early (UserError, in the driver) if the feature service is not in the registry."""
        from onepiece.features.repo import open_store
        from onepiece.features.service import resolve_service

        repo = self.repo()
        resolve_service(open_store(repo), repo.feature_service)

    def __call__(self, keys: dict[str, pa.Table]) -> SideTables:
        from onepiece.features.retrieval import EntityRequest, side_features

        request = EntityRequest(
            item_ids=keys["items"]["item_id"],
            user_ids=keys["users"]["user_id"],
            query_ids=keys["queries"]["query_id"],
            item_as_of=keys["items"]["as_of"],
            user_as_of=keys["users"]["as_of"],
            query_as_of=keys["queries"]["as_of"],
        )
        found = side_features(self.repo(), request)
        return SideTables(found.items, found.users, found.queries, dict(found.unknown))
