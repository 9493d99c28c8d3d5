"""Configs are plain nested dicts read from YAML, with dotted ``--set a.b=c`` overrides.

Presets live in ``larpanda/configs/<kind>/<name>.yaml`` (the repository's ``configs/`` is a link to it);
``load_config("cpu-small", kind="pretrain")`` and ``load_config("configs/pretrain/cpu-small.yaml")`` are
the same thing.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

from .atomic import atomic_write_text
from .errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``2e-3`` and ``1E5`` are numbers, not strings (YAML 1.1,
    which PyYAML follows, asks for a dot and a signed exponent, so ``lr: 2e-3`` would otherwise be the text
    '2e-3')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str):
    """``yaml.safe_load`` with YAML 1.2 floats (`_Loader`)."""
    return yaml.load(text, Loader=_Loader)


def preset_path(name: str, kind: str) -> Path:
    return CONFIG_DIR / kind / f"{name}.yaml"


def list_presets(kind: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def load_config(name_or_path, kind: str | None = None) -> dict:
    """Read a YAML config from a path or a preset name of ``kind``; a ``base: <preset>`` key inherits."""
    path = Path(name_or_path)
    if not path.exists() and kind is not None:
        path = preset_path(str(name_or_path), kind)
    if not path.exists():
        choices = f" (presets: {', '.join(list_presets(kind))})" if kind else ""
        raise UserError(f"config not found: {name_or_path}{choices}")
    try:
        cfg = parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: a config must be a mapping")
    base = cfg.pop("base", None)
    if base is not None:
        cfg = merge(load_config(base, kind), cfg)
    return cfg


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge; ``update`` wins. Returns a new dict."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(cfg: dict, overrides: list[str] | None) -> dict:
    """Apply ``["a.b=3", "c=[1,2]"]``; values are parsed as YAML (so numbers, lists, bools work)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError:
            value = raw
        node = cfg
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {key}: {p} is not a mapping")
        node[parts[-1]] = value
    return cfg


def save_config(cfg: dict, path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
