"""AdamW parameter groups with layer-wise lr decay and the weight-decay exclusion rule (docs/design.md §2.4, docs/model.md §2.5).

A group is a plain dict ``{"params", "name", "lr_scale", "apply_wd"}``; the trainer sets each group's
``lr = base_lr · lr_scale · onecycle[t]`` and ``weight_decay = wd[t] if apply_wd else 0`` every step.
"""

from __future__ import annotations

import re

import torch
from torch import nn

_BLOCK = re.compile(r"(?:^|\.)enc(\d+)\.block(\d+)\.")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """pimm ``WeightDecayExclusion``: biases, norms, layer-scale gammas, tokens and every 1-D parameter."""
    return name.endswith(".bias") or "norm" in name or "gamma" in name or "token" in name or param.ndim <= 1


def block_index(name: str, depths, kind: str = "enc") -> int | None:
    """Global index ``Σdepths[:s] + b`` of the PTv3 block ``{kind}{s}.block{b}`` a parameter belongs to
    (``kind`` "enc" or "dec"), or None for a parameter outside the blocks (embedding, pooling, heads)."""
    m = re.search(rf"(?:^|\.){kind}(\d+)\.block(\d+)\.", name)
    return None if m is None else sum(depths[: int(m.group(1))]) + int(m.group(2))


def encoder_depths(model: nn.Module) -> list[int]:
    """Blocks per encoder stage, read from parameter names ``…enc{e}.block{b}.…``."""
    depth: dict[int, int] = {}
    for name, _ in model.named_parameters():
        m = _BLOCK.search(name)
        if m:
            e, b = int(m.group(1)), int(m.group(2))
            depth[e] = max(depth.get(e, 0), b + 1)
    return [depth.get(e, 0) for e in range(max(depth) + 1)] if depth else []


def layer_scale(name: str, depths: list[int], layer_decay: float) -> float:
    """lr multiplier of a parameter: ``layer_decay^(N − idx − 1)`` for encoder block ``idx`` (global block
    index, N = Σ depths, 21 for panda-base: enc4.block2 → 1, enc0.block0 → 0.9^20); 1 for the rest
    (embedding, mask token, pooling, heads). pimm matches by substring, so teacher copies match too."""
    idx = block_index(name, depths) if layer_decay != 1.0 and depths else None
    return 1.0 if idx is None else float(layer_decay ** (sum(depths) - idx - 1))


def grouped(model: nn.Module, scale_of, no_decay=no_weight_decay) -> list[dict]:
    """Trainable parameters of ``model`` grouped by (``scale_of(name)``, weight decay on/off):
    ``[{"params", "name", "lr_scale", "apply_wd"}]``, ordered by (scale, apply_wd)."""
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale, apply_wd = float(scale_of(name)), not no_decay(name, p)
        g = groups.setdefault((round(scale, 12), apply_wd), {
            "params": [], "name": f"lr{scale:.4g}_{'wd' if apply_wd else 'nowd'}", "lr_scale": scale, "apply_wd": apply_wd})
        g["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def param_groups(model: nn.Module, lr: float, weight_decay: float, layer_decay: float = 1.0, lr_scale: float = 1.0) -> list[dict]:
    """`grouped` with the pretraining rule `layer_scale` (times ``lr_scale``), initial ``lr`` and
    ``weight_decay`` filled in (the trainer overrides both per step)."""
    depths = encoder_depths(model)
    groups = grouped(model, lambda name: layer_scale(name, depths, layer_decay) * lr_scale)
    for g in groups:
        g["lr"], g["weight_decay"] = lr * g["lr_scale"], weight_decay if g["apply_wd"] else 0.0
    return groups


def normalize_groups(groups: list[dict], base_lr: float, weight_decay: float) -> list[dict]:
    """Fill ``lr_scale``/``apply_wd`` for groups returned by a task's own ``param_groups(cfg)``.

    A group without ``lr_scale`` takes ``lr / base_lr`` (or 1); without ``apply_wd`` it takes
    ``weight_decay != 0`` (or True when unset). Empty groups are dropped."""
    out = []
    for i, g in enumerate(groups):
        g = dict(g)
        g["params"] = [p for p in g["params"] if p.requires_grad]
        if not g["params"]:
            continue
        if "lr_scale" not in g:
            g["lr_scale"] = float(g["lr"]) / base_lr if "lr" in g and base_lr else 1.0
        if "apply_wd" not in g:
            g["apply_wd"] = bool(g.get("weight_decay", 1.0) != 0)
        g.setdefault("name", f"group{i}")
        g["lr"] = base_lr * g["lr_scale"]
        g["weight_decay"] = weight_decay if g["apply_wd"] else 0.0
        out.append(g)
    return out


def build_optimizer(groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
