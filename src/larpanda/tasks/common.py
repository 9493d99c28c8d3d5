"""Helpers shared by the downstream tasks (semantic, panoptic): label fractions, data paths, CLI args.

Label fractions (spec-model §3 "Label-fraction experiments"): pimm takes the *first N qualifying events*;
we take a seeded permutation of the qualifying events and keep its prefix of length
``max(1, round(fraction · n))``. With one permutation per seed, subsets are nested: the 1 % set contains
the 0.1 % set (issue 7 deliverable 2).
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..errors import UserError


def label_subset(n_events: int, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted event indices (int64) of the labelled subset: a prefix of one fixed permutation.

    ``n_events`` qualifying events, ``fraction`` in (0, 1]; at least one event is kept. For a fixed
    ``(n_events, seed)``, a smaller fraction always gives a subset of a larger one.
    """
    n_events = int(n_events)
    if n_events <= 0:
        raise UserError("label_subset: no events to take labels from")
    fraction = float(fraction)
    if not (0.0 < fraction <= 1.0):
        raise UserError(f"--label-fraction must be in (0, 1], got {fraction}")
    k = max(1, min(n_events, int(round(fraction * n_events))))
    perm = np.random.default_rng(int(seed)).permutation(n_events)
    return np.sort(perm[:k]).astype(np.int64)


def resolve_data(paths) -> list[str]:
    """Expand files, directories (their ``*.h5``) and globs into a sorted list of HDF5 files."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for p in paths or []:
        p = str(p)
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "*.h5")))
            if not found:
                raise UserError(f"{p}: directory holds no .h5 files")
            out.extend(found)
        elif any(ch in p for ch in "*?["):
            found = sorted(glob.glob(p))
            if not found:
                raise UserError(f"{p}: no file matches")
            out.extend(found)
        elif os.path.exists(p):
            out.append(p)
        else:
            raise UserError(f"{p}: no such file")
    if not out:
        raise UserError("no input data given (--data)")
    return out


def split_paths(paths: list[str], split: str) -> list[str]:
    """Files of a directory produced by ``larpanda simulate --split`` whose name mentions ``split``."""
    chosen = [p for p in paths if split in Path(p).stem]
    return chosen or paths


def add_common_train_args(p) -> None:
    """Arguments shared by ``train semantic`` and ``train panoptic`` (design.md §3)."""
    p.add_argument("--mode", required=True, help="training mode (see the task's choices)")
    p.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training events with labels, (0,1] (default 1)")
    p.add_argument("--weights", default=None, help="pretrained backbone or task weights (dir, .safetensors or Panda .pth)")
    p.add_argument("--data", nargs="+", required=True, help="training HDF5 files or directories")
    p.add_argument("--val-data", nargs="+", default=None, help="validation HDF5 files or directories")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, config.yaml, checkpoints/, weights/)")
    p.add_argument("--config", default=None, help="task config preset name or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V", help="override a config key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=None, help="seed for the label subset and training (overrides the config)")
    p.add_argument("--max-events", type=int, default=None, help="read at most this many training events")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_task_config(kind: str, name_or_path, overrides=None, default: str = "default") -> dict:
    from ..config import apply_overrides, load_config

    cfg = load_config(name_or_path or default, kind)
    return apply_overrides(cfg, overrides)


def labelled_dataset(dataset, fraction: float, seed: int):
    """A `torch.utils.data.Subset` of ``dataset`` with the `label_subset` events (nested across fractions)."""
    from torch.utils.data import Subset

    idx = label_subset(len(dataset), fraction, seed)
    return Subset(dataset, idx.tolist())
