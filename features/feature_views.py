"""Feature views: what each entity serves and for how long a value stays valid.

The fields come from the data contract (onepiece.contract.schemas). A value is served
point-in-time: the latest snapshot before the requested time, and nothing once it is
older than the view's ttl (the caller then uses the contract default).
"""

from datetime import timedelta

from data_sources import items_source, queries_source, users_source
from entities import item, query, user
from feast import FeatureView

from onepiece.contract.schemas import ITEM_FEATURES, QUERY_FEATURES, USER_FEATURES
from onepiece.features.types import contract_fields

# Items and queries are daily snapshots: a value older than two days means the entity
# dropped out of the snapshot (delisted item, dead query) and must not be served.
item_features_fv = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(days=2),
    schema=contract_fields(ITEM_FEATURES, "items"),
    source=items_source,
    online=True,
    tags={"team": "search-ranking", "snapshot": "daily"},
    description="Item side information for the shared item adapter and the candidates.",
)

# Profiles change rarely and are re-stamped only on change: keep them for a year.
user_profile_fv = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=365),
    schema=contract_fields(USER_FEATURES, "users"),
    source=users_source,
    online=True,
    tags={"team": "search-ranking", "snapshot": "on-change"},
    description="User profile for the situational-descriptor user token.",
)

query_features_fv = FeatureView(
    name="query_features",
    entities=[query],
    ttl=timedelta(days=2),
    schema=contract_fields(QUERY_FEATURES, "queries"),
    source=queries_source,
    online=True,
    tags={"team": "search-ranking", "snapshot": "daily"},
    description="Query text and popularity for the situational-descriptor query token.",
)
