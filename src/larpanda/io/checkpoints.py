"""Weights I/O: safetensors directories and official Panda ``.pth`` files (docs/design.md §4.5, docs/design.md §4.6).

A weights directory holds ``model.safetensors`` (the state dict; official key names for backbones) and
``config.json``: ``{"task": "backbone" | "semantic" | "panoptic", "backbone": {PTv3 kwargs}, ...task keys}``.
Official Panda checkpoints are ``{"config": kwargs, "state_dict": ...}``; they are read with
``torch.load(weights_only=True)`` and a small allow-list of plain data types (`safe_load`), so a pickle
payload is refused and never executed. Panda names ("particle", ...) resolve through the Hub (`hub`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_write_bytes, atomic_write_text
from ..constants import ENERGY_THRESHOLD_MEV
from ..errors import UserError
from ..nn.ptv3 import PointTransformerV3

TASKS = ("backbone", "semantic", "panoptic")


class Backbone(PointTransformerV3):
    """The PTv3 backbone as a loadable model: ``.config`` = ``{"task": "backbone", "backbone": kwargs}``,
    ``.embed(event)``. State-dict keys are the official ones (no prefix)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.config = {"task": "backbone", "backbone": _jsonable(dict(self.kwargs))}

    def embed(self, event, energy_threshold: float = ENERGY_THRESHOLD_MEV) -> np.ndarray:
        """Per-point up-cast features (N_kept, sum(enc_channels)) of one `Event`, fp32, eval mode.

        Rows follow the event's voxel order restricted to the points passing the energy cut
        (E > ``energy_threshold`` MeV), i.e. ``event.voxel[event.energy > thr]``. An event above the
        inference memory limit raises `larpanda.io.memory.InferenceMemoryError` before the forward pass."""
        from .events import embed_event

        keys = ("coord", "grid_coord", "feat", "offset")
        return embed_event(self, event, energy_threshold, lambda p: self(type(p)({k: p[k] for k in keys}), upcast=True).feat)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def build_backbone(**kwargs) -> nn.Module:
    """A randomly initialised backbone (`PointTransformerV3` with ``.config`` and ``.embed``)."""
    try:
        return Backbone(**kwargs)
    except (ValueError, TypeError, AssertionError) as exc:
        raise UserError(f"invalid backbone config: {exc}") from None


def build_model(preset_or_config) -> nn.Module:
    """Build a model with random weights.

    ``preset_or_config``: a preset name of ``configs/model`` (``panda-base``, ``small``, ``tiny``), a YAML
    path, a dict of PTv3 kwargs, or a full weights config dict with ``"task"`` (dispatched like
    `load_model`)."""
    from ..config import load_config

    cfg = preset_or_config
    if not isinstance(cfg, dict):
        cfg = load_config(cfg, "model")
    if "task" in cfg:
        return model_from_config(cfg)
    return build_backbone(**cfg)


def model_from_config(cfg: dict) -> nn.Module:
    """Dispatch a weights config on ``cfg["task"]`` (docs/design.md §4.5)."""
    task = cfg.get("task", "backbone")
    if task == "backbone":
        if "backbone" not in cfg:
            raise UserError("config.json: task 'backbone' needs a 'backbone' dict of PTv3 kwargs")
        return build_backbone(**cfg["backbone"])
    if task in ("semantic", "panoptic"):
        import importlib

        module = importlib.import_module(f"larpanda.tasks.{task}")
        return module.model_from_config(cfg)
    raise UserError(f"config.json: unknown task {task!r} (choose from {', '.join(TASKS)})")


def _load_strict(model: nn.Module, state_dict: dict, where) -> nn.Module:
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or bad:

        def show(keys):
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if bad:
            parts.append(f"shape mismatch: {show(bad)}")
        raise UserError(f"{where}: weights do not match the config's model: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)
    return model


def _read_pth(path: Path) -> dict:
    """An official Panda checkpoint ``{"config", "state_dict"}``, read by `safe_load.safe_torch_load`."""
    from .safe_load import safe_torch_load

    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or "state_dict" not in obj or "config" not in obj:
        raise UserError(f"{path}: not an official Panda checkpoint (expected a dict with 'config' and 'state_dict')")
    return obj


def official_to_config(official: dict) -> dict:
    """Map an official Panda ``config`` to our weights config (docs/design.md §4.6)."""
    cfg = dict(official)
    if "backbone" not in cfg or not isinstance(cfg["backbone"], dict):
        return {"task": "backbone", "backbone": _jsonable(cfg)}
    # a Detector always has full_in_channels (a required kwarg), a Segmenter backbone_out_channels
    task = "panoptic" if ("full_in_channels" in cfg or "num_queries" in cfg) else "semantic"
    return {"task": task, "official": True, **_jsonable(cfg)}


def load_model(path, revision: str | None = None) -> nn.Module:
    """Load weights from a directory (``model.safetensors`` + ``config.json``), a ``.safetensors`` file with
    ``config.json`` beside it, or an official Panda ``.pth``/``.pt``. Keys must match exactly (a
    ``module.`` prefix is stripped); a clear `UserError` lists missing/unexpected keys.

    ``path`` may also be a Panda name ("base", "semantic", "particle", "interaction"): its official
    checkpoint is taken from the Hugging Face cache or downloaded at ``revision`` (`hub.resolve_weights`)."""
    from .hub import resolve_weights

    path = resolve_weights(path, revision)
    if path.is_dir() or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        st = path / "model.safetensors" if path.is_dir() else path
        cj = st.parent / "config.json"
        if not st.exists() or not cj.exists():
            raise UserError(f"{path}: a weights directory needs model.safetensors and config.json")
        try:
            cfg = json.loads(cj.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{cj}: invalid JSON: {exc}") from None
        try:
            sd = load_file(str(st))
        except Exception as exc:
            raise UserError(f"{st}: cannot read safetensors: {exc}".replace("\n", " ")) from None
        model = model_from_config(cfg)
        _load_strict(model, sd, st)
        model.eval()
        return model
    obj = _read_pth(path)
    cfg = official_to_config(obj["config"])
    model = model_from_config(cfg)
    _load_strict(model, obj["state_dict"], path)
    model.eval()
    return model


def save_model(model: nn.Module, out_dir) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (each atomically; the config last) into ``out_dir``.

    ``model.config`` must be a weights config dict with ``"task"`` (a bare PTv3 kwargs dict is wrapped
    as task "backbone")."""
    from safetensors.torch import save

    cfg = getattr(model, "config", None)
    if not isinstance(cfg, dict):
        raise UserError("save_model: the model has no .config dict")
    if "task" not in cfg:
        cfg = {"task": "backbone", "backbone": cfg}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    atomic_write_text(out / "config.json", json.dumps(_jsonable(cfg), indent=2, default=_json_default) + "\n")
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
