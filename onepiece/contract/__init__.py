"""The data contract: table schemas (``schemas``) and the validator (``validate``)."""

from onepiece.contract.schemas import *  # noqa: F401,F403
from onepiece.contract.schemas import TABLES, TableSpec
from onepiece.contract.validate import ContractError, conform, validate_manifest

__all__ = ["TABLES", "TableSpec", "ContractError", "conform", "validate_manifest"]
