"""larpanda.io: weights I/O (safetensors + config.json; official Panda .pth import, read without running
pickled code: `larpanda.io.safe_load`), Panda names and PILArNet-M splits from the Hugging Face Hub
(`larpanda.io.hub`) and the inference memory guard (`larpanda.io.memory`)."""

from .checkpoints import build_model, load_model, model_from_config, save_model
from .memory import InferenceMemoryError, estimate_bytes, set_limits

__all__ = ["build_model", "load_model", "save_model", "model_from_config", "InferenceMemoryError", "estimate_bytes",
           "set_limits"]
