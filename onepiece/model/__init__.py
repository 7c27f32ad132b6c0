"""The onePiece model (PyTorch): tensor contract, tokens, masks, backbone, reasoning,
heads, calibration, baselines, variants, checkpoints, losses. Imports only torch, numpy, pyarrow and
the data contract."""

from onepiece.model.checkpoint import load_checkpoint, save_checkpoint
from onepiece.model.config import ModelConfig
from onepiece.model.inputs import OUTPUT_SPECS, TENSOR_SPECS, ModelInputs, tensorize
from onepiece.model.model import ModelOutput, OnePiece, score
from onepiece.model.retrieval import export_item_vectors
from onepiece.model.variants import VARIANTS, variant_config

__all__ = [
    "ModelConfig",
    "ModelInputs",
    "ModelOutput",
    "OUTPUT_SPECS",
    "OnePiece",
    "TENSOR_SPECS",
    "VARIANTS",
    "export_item_vectors",
    "load_checkpoint",
    "save_checkpoint",
    "score",
    "tensorize",
    "variant_config",
]
