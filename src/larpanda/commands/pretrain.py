"""`larpanda pretrain`: Sonata-style self-distillation of the PTv3 backbone (docs/model.md §2).

    larpanda pretrain --config configs/pretrain/cpu-small.yaml --data sim/train.h5 --out runs/pt
    torchrun --nproc-per-node 4 -m larpanda pretrain --config panda-base --data DIR --out RUN

Writes ``RUN/{config.yaml,metrics.jsonl,checkpoints/last.pt}`` and, when training completes,
``RUN/backbone/{model.safetensors,config.json}`` (the student backbone by default; config
``export.which: teacher`` exports the EMA teacher instead), loadable by ``larpanda.load_model``.
"""

from __future__ import annotations

from ..constants import ENERGY_THRESHOLD_MEV, MIN_RAW_POINTS


def add_parser(sub):
    p = sub.add_parser("pretrain", help="self-distillation pretraining of the backbone (Sonata/Panda objective)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="cpu-small", help="pretrain preset name (panda-base, cpu-small, cpu-long) or YAML path (default cpu-small)")
    p.add_argument("--data", nargs="+", required=True, help="PILArNet-M HDF5 files or directories")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V",
                   help="override a config key, e.g. --set train.max_steps=50 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/checkpoints/last.pt")
    p.add_argument("--deterministic", action="store_true", help="deterministic algorithms (bit-identical reruns on CPU)")
    p.add_argument("--skip-bad-events", action="store_true", help="log, count and skip malformed events instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def build_task(cfg: dict):
    """`SonataTask` from a pretrain config (``model`` preset + ``model_overrides`` + ``ssl``)."""
    from ..config import load_config, merge
    from ..errors import UserError
    from ..ssl import SonataTask

    model = cfg.get("model", "panda-base")
    bcfg = load_config(model, "model") if not isinstance(model, dict) else dict(model)
    bcfg = merge(bcfg, cfg.get("model_overrides") or {})
    try:
        return SonataTask(bcfg, **(cfg.get("ssl") or {}))
    except (ValueError, TypeError) as exc:
        raise UserError(f"pretrain config: {exc}") from None


def build_dataset(cfg: dict, paths, skip_bad_events: bool = False):
    from ..data.dataset import PILArNetDataset
    from ..ssl import SSLTransform

    d = cfg.get("data") or {}
    return PILArNetDataset(
        paths, split=d.get("split"), energy_threshold=d.get("energy_threshold", ENERGY_THRESHOLD_MEV),
        min_points=d.get("min_points", MIN_RAW_POINTS), max_events=d.get("max_events"),
        transform=SSLTransform(**(cfg.get("views") or {})), augment={"views": True},
        seed=int((cfg.get("train") or {}).get("seed", 0)), skip_bad_events=skip_bad_events,
        after_cut_min_points=d.get("after_cut_min_points", 64),
    )


def run(args):
    import json
    import sys
    from pathlib import Path

    from ..config import apply_overrides, load_config
    from ..errors import UserError
    from ..train import distributed as D
    from ..train import fit, seed_all

    cfg = apply_overrides(load_config(args.config, "pretrain"), args.overrides)
    cfg.setdefault("train", {})
    if args.deterministic:
        cfg["train"]["deterministic"] = True
    if args.quiet:
        cfg["train"]["progress"] = False
    dataset = build_dataset(cfg, args.data, args.skip_bad_events)
    if len(dataset) == 0:
        raise UserError(f"no event in {' '.join(args.data)} has >= {cfg.get('data', {}).get('min_points', MIN_RAW_POINTS)} points")
    seed_all(int(cfg["train"].get("seed", 0)))
    task = build_task(cfg)
    result = fit(task, dataset, cfg, args.out, resume=args.resume)
    out = Path(args.out)
    if D.is_main():
        if result["interrupted"]:
            print(f"interrupted at step {result['step']}/{result['total_steps']}; continue with --resume", file=sys.stderr)
        else:
            which = (cfg.get("export") or {}).get("which", "student")
            task.export_backbone(out / "backbone", which=which)
            summary = {k: result[k] for k in ("step", "loss", "nonfinite", "steps_per_s", "events_per_s")}
            summary["backbone"] = str(out / "backbone")
            summary["skipped_events"] = len(getattr(dataset, "skipped", []))
            print(json.dumps(summary))
    D.cleanup()
    return 0
