"""larpanda.train: the training engine shared by pretraining and the downstream tasks (``fit``)."""

from .optim import param_groups
from .trainer import fit, load_checkpoint, save_checkpoint

__all__ = ["fit", "param_groups", "load_checkpoint", "save_checkpoint"]
