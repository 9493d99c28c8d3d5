"""The skeleton shared by ``larpanda train semantic`` and ``larpanda train panoptic``: config and seed,
the labelled subset and the validation set, `larpanda.train.fit` with validation, then ``OUT/weights``,
``OUT/val_metrics.json`` and ``OUT/summary.json``. Each task supplies its model and its ``evaluate_model``."""

from __future__ import annotations

import logging
from pathlib import Path

from ..atomic import atomic_write_json
from .common import labelled_dataset, load_task_config, make_dataset

log = logging.getLogger("larpanda.train")


def task_config(args, kind: str, default: str) -> tuple[dict, int]:
    """The task config (preset or YAML ``--config``, ``--set`` overrides) and the run's seed, with the RNGs
    seeded by it (the model built next gets the seed's initialisation)."""
    from ..train import seed_all

    cfg = load_task_config(kind, args.config, args.overrides, default=default)
    train = cfg.setdefault("train", {})
    seed = int(args.seed if args.seed is not None else train.get("seed", 0))
    train["seed"] = seed
    seed_all(seed)
    if args.quiet:
        train["progress"] = False
    return cfg, seed


def run_datasets(args, cfg: dict, seed: int):
    """(all training events, the labelled subset, the validation set or None). A labelled subset smaller
    than one batch (1 % of a small training set can be 1 to 3 events) becomes the batch."""
    data_cfg = cfg.get("data", {})
    full = make_dataset(args.data, data_cfg, train=True, seed=seed, max_events=args.max_events)
    train_set = labelled_dataset(full, args.label_fraction, seed)
    if len(train_set) < int(cfg["train"].get("batch_size", 4)):
        cfg["train"]["batch_size"] = len(train_set)
    val_set = make_dataset(args.val_data, data_cfg, train=False) if args.val_data else None
    return full, train_set, val_set


def train_and_save(model, cfg: dict, args, train_set, val_set, evaluate, val_keys, before_save=None) -> dict:
    """Fit ``model`` (validated with ``evaluate(model, dataset, batch_size, max_events)`` every
    ``train.eval_every`` steps; the best model by ``train.select_metric`` is the one saved), save the weights
    and the final validation metrics; returns the run summary. ``before_save(model, val_set) -> (dict,
    metrics)`` (only with a validation set) adjusts the fitted model before it is saved; the dict goes into
    the summary under ``calibration``, and the metrics, when not None, are the adjusted model's on the whole
    validation set (so it is not read again)."""
    from ..io import save_model
    from ..train import fit

    ev = cfg.get("eval", {})
    batch_size, max_events = int(ev.get("batch_size", 4)), ev.get("max_events")

    def eval_fn(task, dataset):
        return {k: v for k, v in evaluate(task, dataset, batch_size, max_events).items() if isinstance(v, float)}

    result = fit(model, train_set, cfg, args.out, resume=args.resume, val_dataset=val_set, eval_fn=eval_fn)
    out = Path(args.out)
    summary = {"run": cfg["run"], "fit": {k: v for k, v in result.items() if k != "eval"}}
    metrics = None
    if before_save is not None and val_set is not None:
        summary["calibration"], metrics = before_save(model, val_set)
    save_model(model, out / "weights")
    if val_set is not None:
        metrics = metrics if metrics is not None else evaluate(model, val_set, batch_size, None)
        atomic_write_json(out / "val_metrics.json", metrics)
        summary["val"] = {k: metrics[k] for k in val_keys if k in metrics}
    atomic_write_json(out / "summary.json", summary)
    return summary


def feature_cache_fits(model, dataset, fraction: float | None = None) -> bool:
    """Whether the panoptic decoder-mode feature cache of ``dataset`` (`PanopticModel.enable_feature_cache`)
    fits in ``fraction`` of the available memory (default: the inference guard's `io.memory.DEFAULT_FRACTION`).

    Its size is bounded by the raw points (before the energy cut) × sum(enc_channels) × 2 bytes (fp16): on the
    fixed benchmark's 2,000 training events that bound is 7.1 GB, and the `cpu-long` run peaked at 10.0 GB
    (docs/benchmarks.md "The `cpu-long` preset"). When it does not fit, a warning says so and training runs
    without the cache (every step computes the frozen features again: slower) instead of being killed for
    memory during the first epoch."""
    from ..io.memory import DEFAULT_FRACTION, available_bytes

    fraction = DEFAULT_FRACTION if fraction is None else fraction
    need = float(dataset.raw_point_counts().sum()) * sum(model.backbone.kwargs["enc_channels"]) * 2
    avail = available_bytes("cpu")
    if avail is None or need <= fraction * avail:
        return True
    log.warning("the feature cache of %d training events needs up to %.1f GB and %.1f GB of memory is available: "
                "training without it (slower; --set data.cache_features=false silences this)",
                len(dataset), need / 1e9, avail / 1e9)
    return False
