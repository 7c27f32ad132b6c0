"""Feast field declarations derived from the data contract (no column list is re-spelled).

The feature repository (``features/feature_views.py``) builds its schemas with
:func:`contract_fields`, so a feature's name and type come from
``onepiece.contract.schemas`` and nowhere else.
"""

from __future__ import annotations

import pyarrow as pa
from feast import Field
from feast.types import Float32, Float64, Int32, Int64, PrimitiveFeastType, String

from onepiece.contract.schemas import FeatureSpec

_FEAST_TYPES: dict[pa.DataType, PrimitiveFeastType] = {
    pa.int32(): Int32,
    pa.int64(): Int64,
    pa.float32(): Float32,
    pa.float64(): Float64,
    pa.string(): String,
}
_ARROW_TYPES: dict[str, pa.DataType] = {str(v): k for k, v in _FEAST_TYPES.items()}


def feast_dtype(arrow_type: pa.DataType) -> PrimitiveFeastType:
    """The Feast dtype of a contract Arrow type."""
    try:
        return _FEAST_TYPES[arrow_type]
    except KeyError:
        raise TypeError(f"no Feast type for the contract type {arrow_type}") from None


def arrow_type(feast_type: object) -> pa.DataType:
    """The Arrow type of a Feast dtype (the inverse of :func:`feast_dtype`)."""
    try:
        return _ARROW_TYPES[str(feast_type)]
    except KeyError:
        raise TypeError(f"no Arrow type for the Feast type {feast_type}") from None


def contract_fields(specs: tuple[FeatureSpec, ...], table: str) -> list[Field]:
    """One Feast Field per contract feature, described by where it comes from."""
    return [
        Field(
            name=spec.name,
            dtype=feast_dtype(spec.type),
            description=(
                f"{table}.{spec.name} ({'categorical' if spec.categorical else 'numeric'}); "
                f"default for an unknown entity: {spec.default!r}"
            ),
        )
        for spec in specs
    ]
