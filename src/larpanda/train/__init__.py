"""larpanda.train: the training engine shared by pretraining and the downstream tasks (``fit``)."""

from .optim import param_groups
from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import fit, seed_all

__all__ = ["fit", "seed_all", "param_groups", "load_checkpoint", "save_checkpoint"]
