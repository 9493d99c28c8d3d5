"""Weights of the downstream tasks: the pretrained backbone a training run starts from, and trained task
models read back. Files are read and written by `larpanda.io` (``model.safetensors`` + ``config.json``, or
an official Panda ``.pth``); names such as "particle" resolve through the Hugging Face cache."""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from .common import find_weights


def pretrained_backbone(path) -> tuple[dict, dict]:
    """(PTv3 kwargs, backbone state_dict) of pretrained weights: a backbone, or the backbone of a task model."""
    from ..io import load_model

    model = load_model(find_weights(path))
    cfg = model.config
    if cfg.get("task", "backbone") == "backbone":
        return dict(cfg["backbone"]), model.state_dict()
    sd = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    return dict(cfg["backbone"]), sd


def load_backbone_into(backbone: nn.Module, state_dict: dict, where, keep_decoder: bool = True) -> None:
    """Load pretrained weights into a task's PTv3 ``backbone``: every embedding and encoder key must load;
    the pretraining mask token is dropped; decoder keys (``dec.*``) load when present and ``keep_decoder``."""
    sd = {k: v for k, v in state_dict.items()
          if k != "embedding.mask_token" and (keep_decoder or not k.startswith("dec."))}
    missing, unexpected = backbone.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("dec.")]
    if missing or unexpected:
        raise UserError(f"{where}: pretrained backbone does not match: missing {missing[:3]} ({len(missing)}), "
                        f"unexpected {list(unexpected)[:3]} ({len(unexpected)})")


def load_task_model(path, task: str | None = None) -> nn.Module:
    """A trained model from weights (a run directory means ``RUN/weights``); with ``task``, refuse others."""
    from ..io import load_model

    model = load_model(find_weights(path))
    got = getattr(model, "config", {}).get("task")
    if task is not None and got != task:
        raise UserError(f"{path}: not {task} weights (task {got!r})")
    return model
