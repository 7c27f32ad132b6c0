"""Entities: the join keys of the side features (declarations only)."""

from feast import Entity, ValueType

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="A listing that can be a candidate, an interaction or an anchor.",
)

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A searching user (profile features).",
)

query = Entity(
    name="query",
    join_keys=["query_id"],
    value_type=ValueType.INT64,
    description="A normalised search query.",
)
