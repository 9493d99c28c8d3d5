"""Helpers shared by the downstream tasks (semantic, panoptic): label fractions, data paths, CLI args.

Label fractions (docs/model.md §3.4, docs/design.md §2.2): pimm takes the *first N qualifying events*;
we take a seeded permutation of the qualifying events and keep its prefix of length
``max(1, round(fraction · n))``. With one permutation per seed, subsets are nested: the 1 % set contains
the 0.1 % set.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV, MIN_RAW_POINTS
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


def add_common_train_args(p) -> None:
    """Arguments shared by ``train semantic`` and ``train panoptic`` (docs/design.md §3.2)."""
    p.add_argument("--mode", required=True, help="training mode (see the task's choices)")
    p.add_argument("--label-fraction", type=float, default=1.0, help="fraction of training events with labels, (0,1] (default 1)")
    p.add_argument("--weights", default=None, help="pretrained backbone or task weights (dir, .safetensors or Panda .pth)")
    p.add_argument("--data", nargs="+", required=True, help="training HDF5 files or directories")
    p.add_argument("--val-data", nargs="+", default=None, help="validation HDF5 files or directories")
    p.add_argument("--out", required=True, help="run directory (metrics.jsonl, config.yaml, checkpoints/, weights/)")
    p.add_argument("--config", default=None, help="preset name (e.g. cpu, cpu-long) or YAML merged over the mode/level preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V", help="override a config key (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--seed", type=int, default=None, help="seed for the label subset and training (overrides the config)")
    p.add_argument("--max-events", type=int, default=None, help="read at most this many training events")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def load_task_config(kind: str, name_or_path, overrides=None, default: str = "default") -> dict:
    """The ``default`` preset of ``kind`` (the semantic mode or the panoptic level), then the ``--config``
    preset or YAML merged over it (e.g. the ``cpu-long`` budget), then the ``--set`` overrides.

    A budget's ``for_mode: {NAME: {...}}`` section is merged last, for the mode (or level) ``NAME`` only:
    one budget in minutes means different step counts for models of different speeds."""
    from ..config import apply_overrides, load_config, merge

    cfg = load_config(default, kind)
    if name_or_path:
        budget = load_config(name_or_path, kind)
        for_mode = budget.pop("for_mode", None) or {}
        if not isinstance(for_mode, dict) or not all(isinstance(v, dict) for v in for_mode.values()):
            raise UserError(f"config {name_or_path}: for_mode must map a mode name to a config section")
        cfg = merge(merge(cfg, budget), for_mode.get(default, {}))
    return apply_overrides(cfg, overrides)


def labelled_dataset(dataset, fraction: float, seed: int):
    """``dataset.subset`` of the `label_subset` events (nested across fractions); a `PILArNetDataset`,
    so that every epoch draws new augmentations of the labelled events."""
    return dataset.subset(label_subset(len(dataset), fraction, seed))


# ------------------------------------------------------------------------------ runs and evaluation


def make_dataset(paths, cfg_data: dict, train: bool, seed: int = 0, max_events=None):
    """`PILArNetDataset` over ``paths`` with the task config's ``data:`` section.

    Keys: ``energy_threshold`` (eval cut, 0.13), ``train_energy_threshold`` (defaults to the eval cut),
    ``min_points`` (raw points, 1024 as the reference), ``augment`` (dict for training, None = none),
    ``skip_bad_events`` (log, count and skip malformed events and, in evaluation, events above the
    inference limits; default False).
    """
    from ..data.dataset import PILArNetDataset

    thr = cfg_data.get("energy_threshold", ENERGY_THRESHOLD_MEV)
    if train:
        thr = cfg_data.get("train_energy_threshold", thr)
    return PILArNetDataset(resolve_data(paths), energy_threshold=thr, min_points=int(cfg_data.get("min_points", MIN_RAW_POINTS)),
                           max_events=max_events, augment=(cfg_data.get("augment") or None) if train else None,
                           seed=seed, skip_bad_events=bool(cfg_data.get("skip_bad_events", False)))


def evaluation_dataset(args, model):
    """``larpanda evaluate``'s dataset: ``--data`` with the model's energy cut, ``--min-points`` and
    ``--skip-bad-events``. UserError when no event qualifies."""
    ds = make_dataset(args.data, {"energy_threshold": model.energy_threshold, "min_points": args.min_points,
                                  "skip_bad_events": args.skip_bad_events}, train=False)
    if len(ds) == 0:
        raise UserError(f"{' '.join(map(str, args.data))}: no event qualifies (min {args.min_points} raw points; see --min-points)")
    return ds


def skipped_list(dataset) -> list:
    """The list where ``dataset`` (or a Subset's dataset) records skipped events ([] if it has none)."""
    return getattr(getattr(dataset, "dataset", dataset), "skipped", [])


def iterate_batches(dataset, batch_size: int = 4, max_events=None, model=None):
    """Yield collated `Point` batches of ``dataset`` in order (evaluation).

    With ``model``, every event first passes the inference memory guard (`larpanda.io.memory`): an event
    above the limits raises `InferenceMemoryError` naming its file and event, or, when the dataset was
    made with ``skip_bad_events``, is logged, appended to ``dataset.skipped`` and left out; a batch is
    closed early when adding the next event would take its estimate above the limit."""
    from ..data.point import collate

    n = len(dataset) if max_events is None else min(len(dataset), int(max_events))
    if model is None:
        for start in range(0, n, batch_size):
            yield collate([dataset[i] for i in range(start, min(n, start + batch_size))])
        return
    from ..io import memory

    base = getattr(dataset, "dataset", dataset)  # a Subset's underlying PILArNetDataset
    limit = memory.limit_bytes(str(next(model.parameters()).device))[0]
    items, total = [], 0.0
    for i in range(n):
        item = dataset[i]
        source = None
        if "file_index" in item and hasattr(base, "files"):
            source = (base.files[int(np.asarray(item["file_index"]).reshape(-1)[0])],
                      int(np.asarray(item["event_index"]).reshape(-1)[0]))
        try:
            est = memory.check_model(model, item, source=source)
        except memory.InferenceMemoryError as exc:
            if not getattr(base, "skip_bad_events", False):
                raise
            memory.log.warning("skipping event: %s", exc)
            base.skipped.append(str(exc))
            continue
        if items and (len(items) == batch_size or total + est > limit):
            yield collate(items)
            items, total = [], 0.0
        items.append(item)
        total += est
    if items:
        yield collate(items)


def find_weights(path, revision: str | None = None) -> Path:
    """A weights path as given, ``RUN/weights`` when ``path`` is a run directory, or for a Panda name
    ("base", "semantic", "particle", "interaction") its official checkpoint in the Hugging Face cache,
    downloaded at ``revision`` when missing (`larpanda.io.hub.resolve_weights`)."""
    from ..io.hub import resolve_weights

    p = Path(path)
    if p.is_dir() and not (p / "config.json").exists() and (p / "weights" / "config.json").exists():
        return p / "weights"
    return resolve_weights(path, revision)
