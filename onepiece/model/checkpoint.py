"""Checkpoints: ``model.safetensors`` (weights) + ``config.json``. Loading never unpickles."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from onepiece.errors import UserError
from onepiece.model.config import ModelConfig
from onepiece.model.model import OnePiece

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def save_checkpoint(model: OnePiece, directory: str | os.PathLike[str]) -> Path:
    """Write the weights and config into ``directory`` (created); same model -> same bytes."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / CONFIG).write_text(model.config.to_json() + "\n")
    return out


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> OnePiece:
    """Rebuild the model from ``config.json`` and load its weights (eval mode)."""
    src = Path(directory)
    for name in (WEIGHTS, CONFIG):
        if not (src / name).is_file():
            raise UserError(f"checkpoint {src}: missing {name}")
    try:
        config = ModelConfig.from_json((src / CONFIG).read_text())
    except (ValueError, TypeError) as err:
        raise UserError(f"checkpoint {src / CONFIG}: {err}") from None
    model = OnePiece(config)
    state = load_file(str(src / WEIGHTS), device=str(device))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"checkpoint {src / WEIGHTS} does not match its config: {err}") from None
    return model.to(device).eval()
