"""larpanda.io: weights I/O (safetensors + config.json; official Panda .pth import)."""

from .checkpoints import build_model, load_model, model_from_config, save_model

__all__ = ["build_model", "load_model", "save_model", "model_from_config"]
