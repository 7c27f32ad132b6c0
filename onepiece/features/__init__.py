"""Side features from Feast: the feature repository, its registry, point-in-time retrieval.

- ``repo``: FeatureRepoConfig and the FeatureStore on ``features/``
- ``retrieval``: side_features(repo, EntityRequest) -> SideFeatures
- ``registry``: plan / apply with a compatibility check for feature services in use
- ``materialize``: incremental materialisation into the online store
- ``service``: feature services per model version; check_model_service
"""

from onepiece.features.repo import DEFAULT_FEATURE_SERVICE, FeatureRepoConfig, open_store
from onepiece.features.retrieval import EntityRequest, SideFeatures, side_features
from onepiece.features.service import ENTITY_KINDS, check_model_service

__all__ = [
    "DEFAULT_FEATURE_SERVICE",
    "ENTITY_KINDS",
    "EntityRequest",
    "FeatureRepoConfig",
    "SideFeatures",
    "check_model_service",
    "open_store",
    "side_features",
]
