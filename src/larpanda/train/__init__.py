"""larpanda.train: the training engine shared by pretraining and the downstream tasks (``fit``)."""

from .optim import param_groups
from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import fit

__all__ = ["fit", "param_groups", "load_checkpoint", "save_checkpoint"]
