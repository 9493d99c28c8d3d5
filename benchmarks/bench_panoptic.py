"""Panoptic benchmark (issue 8): decoder-mode head on a frozen pretrained backbone, simulated events.

For each level (particle, interaction), within a wall-clock budget (default 15 min on CPU):
  1. fill the frozen-feature cache (one backbone pass per training event, shared by the levels; timed
     separately, not counted in the training budget);
  2. time a few decoder steps, set ``max_steps`` to fill the rest of the budget, run ``larpanda.train.fit``
     (the same engine and loss as ``larpanda train panoptic --mode decoder``);
  3. evaluate on the validation events (spec-data §6.2/6.3 metrics) and time the forward pass and the
     post-processing (matrix NMS + painting) per event.

    larpanda simulate --events 500 --seed 11 --out DATA --split 400,60,40
    larpanda pretrain --config cpu-small --data DATA/train --out PRE
    python benchmarks/bench_panoptic.py --weights PRE --data DATA --out bench_panoptic.json

Writes a JSON summary (atomic) and prints it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch


def run_level(level: str, args, shared_cache: dict) -> dict:
    from larpanda.config import apply_overrides, load_config
    from larpanda.data.point import collate
    from larpanda.tasks.common import make_dataset
    from larpanda.tasks.panoptic import build_panoptic_model, evaluate_model
    from larpanda.train import fit

    cfg = apply_overrides(load_config(args.config, "panoptic"), args.set)
    cfg.setdefault("train", {})["progress"] = False
    data = Path(args.data)
    train_set = make_dataset([str(data / "train")], cfg["data"], train=True, seed=0, max_events=args.train_events)
    val_set = make_dataset([str(data / "val")], cfg["data"], train=False, max_events=args.val_events)
    torch.manual_seed(0)
    model = build_panoptic_model("decoder", level, cfg, args.weights)
    model.enable_feature_cache()
    model.feature_cache = shared_cache  # the frozen features are the same for both levels
    # 1. frozen features of every training event (once; not counted in the training budget)
    t_c = time.perf_counter()
    model.train()
    bs = int(cfg["train"]["batch_size"])
    for s in range(0, len(train_set), bs):
        model._cached_features(collate([train_set[i] for i in range(s, min(len(train_set), s + bs))]))
    t_cache = time.perf_counter() - t_c
    t_start = time.perf_counter()
    budget = args.minutes * 60.0

    # 2. train for the budget: a short fit measures the step rate on this (shared) machine, then fits of
    #    max_steps = 0.9 · remaining time · measured rate follow (each a full OneCycle), until < 60 s remain
    out_dir = Path(args.work) / level
    shutil.rmtree(out_dir, ignore_errors=True)
    cycles, sps, total_steps = [], None, 0
    while True:
        left = budget - (time.perf_counter() - t_start)
        if args.max_steps:
            steps = args.max_steps if not cycles else 0
        elif sps is None:
            steps = 20
        else:
            steps = int(0.9 * left * sps)
        if steps < 10 or left < 60:
            break
        cfg["train"]["max_steps"] = steps
        cfg["train"].pop("epochs", None)
        t_fit0 = time.perf_counter()
        fit_res = fit(model, train_set, cfg, out_dir / f"cycle{len(cycles)}", resume=False)
        dt = time.perf_counter() - t_fit0
        sps = steps / dt
        total_steps += steps
        cycles.append({"steps": steps, "wall_s": dt, "logs": fit_res.get("logs")})
    t_train = time.perf_counter() - t_start
    max_steps, t_fit, step_s = total_steps, sum(c["wall_s"] for c in cycles), 1 / sps if sps else None

    # 3. validation metrics and timings
    metrics = evaluate_model(model, val_set, batch_size=1)
    keep = ("f1", "precision", "recall", "matched_iou", "ari", "pq", "sq", "rq", "pq_std", "pid_macro_purity",
            "pid_macro_efficiency", "pid_macro_f1", "pid_accuracy", "num_events", "forward_s_per_event",
            "postprocess_s_per_event", "num_gt", "num_pred")
    res = {k: metrics[k] for k in keep if k in metrics}
    res.update({
        "level": level, "train_events": len(train_set), "val_events": len(val_set), "max_steps": max_steps,
        "batch_size": bs, "feature_cache_s": t_cache, "fit_s": t_fit,
        "total_train_wall_s": t_train, "decoder_step_s_calibrated": step_s, "cycles": cycles,
        "postprocess_over_forward": metrics["postprocess_s_per_event"] / max(metrics["forward_s_per_event"], 1e-12),
        "decoder_params": sum(p.numel() for p in model.decoder.parameters()),
        "full_in_channels": model.full_in_channels,
    })
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="pretrained backbone weights (larpanda pretrain run or weights dir)")
    ap.add_argument("--data", required=True, help="directory with train/ and val/ (larpanda simulate --split)")
    ap.add_argument("--out", required=True, help="summary JSON")
    ap.add_argument("--work", default="/tmp/panoptic/bench_runs", help="run directories (metrics.jsonl, checkpoints)")
    ap.add_argument("--levels", default="particle,interaction")
    ap.add_argument("--config", default="cpu", help="panoptic preset (default cpu)")
    ap.add_argument("--set", action="append", default=[], help="config override K=V (repeatable)")
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-clock budget per level")
    ap.add_argument("--max-steps", type=int, default=None, help="fixed step count instead of the budget")
    ap.add_argument("--train-events", type=int, default=None)
    ap.add_argument("--val-events", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from larpanda.atomic import atomic_write_json

    out = {"weights": args.weights, "data": args.data, "minutes": args.minutes, "threads": args.threads, "levels": {}}
    cache: dict = {}
    for level in args.levels.split(","):
        out["levels"][level] = run_level(level, args, cache)
        atomic_write_json(args.out, out)
        print(json.dumps(out["levels"][level], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
