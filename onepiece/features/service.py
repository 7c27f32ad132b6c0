"""Feature services: what a model version consumes, resolved against the registry.

A FeatureService names, per feature view, the features a model was trained with. The
model config records its service's name; :func:`check_model_service` is the guard that
scoring calls so that a model never scores contexts built for another service.
"""

from __future__ import annotations

from dataclasses import dataclass

from onepiece.contract.schemas import (
    ITEM_FEATURES,
    QUERY_FEATURES,
    USER_FEATURES,
    FeatureSpec,
)
from onepiece.errors import UserError


@dataclass(frozen=True)
class EntityKind:
    """One kind of entity with side features: its contract table, join key and features."""

    name: str  # "items", "users", "queries" (the contract table)
    id_column: str
    features: tuple[FeatureSpec, ...]


ENTITY_KINDS: dict[str, EntityKind] = {
    kind.name: kind
    for kind in (
        EntityKind("items", "item_id", ITEM_FEATURES),
        EntityKind("users", "user_id", USER_FEATURES),
        EntityKind("queries", "query_id", QUERY_FEATURES),
    )
}
_KIND_BY_ID = {kind.id_column: kind.name for kind in ENTITY_KINDS.values()}


@dataclass(frozen=True)
class ServedView:
    """The part of a feature service that one feature view serves for one entity kind."""

    kind: str
    view: str  # the name used in feature references ("view:feature")
    features: tuple[str, ...]

    def refs(self) -> list[str]:
        return [f"{self.view}:{name}" for name in self.features]


def resolve_service(store, name: str) -> dict[str, ServedView]:
    """The views of feature service ``name`` in the registry, keyed by entity kind."""
    from feast.errors import FeastObjectNotFoundException

    try:
        service = store.get_feature_service(name)
    except FeastObjectNotFoundException:
        known = sorted(s.name for s in store.list_feature_services())
        raise UserError(
            f"feature service '{name}' is not in the registry {store.config.registry.path} "
            f"(known: {known or 'none; run `onepiece features apply` first'})"
        ) from None
    served: dict[str, ServedView] = {}
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [column.name for column in view.entity_columns]
        kind = _KIND_BY_ID.get(keys[0]) if len(keys) == 1 else None
        if kind is None:
            raise UserError(
                f"feature service '{name}': feature view '{view.name}' is keyed by {keys}; "
                f"side features need exactly one of {sorted(_KIND_BY_ID)}"
            )
        if kind in served:
            raise UserError(
                f"feature service '{name}': feature views '{served[kind].view}' and "
                f"'{projection.name_to_use()}' both serve {kind}; one view per entity kind"
            )
        contract = {spec.name for spec in ENTITY_KINDS[kind].features}
        unknown = [f.name for f in projection.features if f.name not in contract]
        if unknown:
            raise UserError(
                f"feature service '{name}', feature view '{view.name}': features {unknown} "
                f"are not {kind} features of the data contract"
            )
        served[kind] = ServedView(
            kind, projection.name_to_use(), tuple(f.name for f in projection.features)
        )
    return served


def check_model_service(model_service: str, run_service: str, model_source: str) -> None:
    """Refuse to score with a model trained on another feature service than the run's."""
    if model_service != run_service:
        raise UserError(
            f"model {model_source} was trained with feature service '{model_service}', "
            f"but this run serves '{run_service}': retrain the model or run with "
            f"--feature-service {model_service}"
        )
