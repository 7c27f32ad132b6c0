"""Feature services: one per model version, naming exactly the features it consumes.

A model's config records the service it was trained with (ModelConfig.feature_service);
scoring refuses a model whose service differs from the run's. A service, once a model
uses it, never changes: a model that needs other features gets a new version.
"""

from feast import FeatureService
from feature_views import item_features_fv, query_features_fv, user_profile_fv

onepiece_ranker_v1 = FeatureService(
    name="onepiece_ranker_v1",
    features=[item_features_fv, user_profile_fv, query_features_fv],
    tags={"model": "onepiece", "version": "1"},
    description="onePiece ranker v1: every item, user and query side feature.",
)
