"""Panoptic benchmark: decoder-mode head on a frozen pretrained backbone, simulated events.

For each level (particle, interaction), within a wall-clock budget (default 15 min on CPU):
  1. fill the frozen-feature cache (one backbone pass per training event, shared by the levels; timed
     separately, not counted in the training budget);
  2. measure the decoder step rate on a throwaway copy of the model (``--calib-steps`` steps; counted in
     the budget), then run ONE ``larpanda.train.fit`` (one OneCycle schedule) of the preset's
     ``train.max_steps`` steps, or fewer (``0.92 · remaining budget · measured rate``) if they would not
     fit; ``--fill-budget`` uses the whole budget instead. The same engine and loss as
     ``larpanda train panoptic --mode decoder``. On a shared machine the rate can change during the fit;
     the JSON records the real training wall time, which can differ from the budget;
  3. evaluate on the held-out events of ``--eval-splits`` (default ``val,test``; spec-data §6.2/6.3
     metrics) and time the forward pass (backbone + head) and the post-processing (matrix NMS + painting)
     per event, batch 1. ``test`` is never used for choosing settings.

    larpanda simulate --events 500 --seed 11 --out DATA --split 400,60,40
    larpanda pretrain --config cpu-small --data DATA/train --out PRE
    python benchmarks/bench_panoptic.py --weights PRE/backbone --data DATA --out bench_panoptic.json

Writes a JSON summary (atomic) and prints it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import torch


def truth_semantics_clusters(dataset, level: str, eps_voxels: float) -> dict:
    """Reference point for the learned head, not a method of ours: connected components (DBSCAN,
    min_samples 1, neighbours within ``eps_voxels``) of the points of each TRUE thing class (PID classes
    for particles, all non-LED points for interactions), scored with the same metrics. It knows the
    semantics perfectly and nothing else: it shows how far plain spatial connectivity gets."""
    import numpy as np
    from sklearn.cluster import DBSCAN

    from larpanda.data.point import collate
    from larpanda.data.transforms import SCALE
    from larpanda.metrics.panoptic import PanopticAccumulator
    from larpanda.tasks.panoptic import LEVELS, level_labels

    lv = LEVELS[level]
    acc = PanopticAccumulator(len(lv["class_names"]), lv["class_names"])
    for i in range(len(dataset)):
        b = collate([dataset[i]])
        inst, seg = (t.numpy() for t in level_labels(b, level))
        xyz = np.asarray(b["coord"], dtype=np.float64) * SCALE  # normalized → voxels
        pred = np.full(len(seg), -1)
        for c in sorted(set(np.unique(seg).tolist()) - set(lv["stuff_classes"])):
            m = np.flatnonzero(seg == c)
            pred[m] = DBSCAN(eps=eps_voxels, min_samples=1).fit_predict(xyz[m]) + pred.max() + 1
        if level == "particle":
            cls = np.where(pred >= 0, seg, lv["stuff_classes"][0])
            acc.update(pred, inst, cls, seg)
        else:
            acc.update(pred, inst)
    return acc.compute()


def run_level(level: str, args, shared_cache: dict) -> dict:
    from larpanda.config import apply_overrides, load_config
    from larpanda.data.point import collate
    from larpanda.tasks.common import make_dataset
    from larpanda.tasks.panoptic import build_panoptic_model, evaluate_model, level_config
    from larpanda.train import fit

    cfg = level_config(apply_overrides(load_config(args.config, "panoptic"), args.set), level)
    cfg["train"]["progress"] = False
    data = Path(args.data)
    train_set = make_dataset([str(data / "train")], cfg["data"], train=True, seed=0, max_events=args.train_events)
    eval_sets = {sp: make_dataset([str(data / sp)], cfg["data"], train=False, max_events=args.val_events)
                 for sp in args.eval_splits.split(",")}
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
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    budget = args.minutes * 60.0

    # 2. step rate on a throwaway copy (same config), then one fit filling the rest of the budget
    out_dir = Path(args.work) / level
    shutil.rmtree(out_dir, ignore_errors=True)
    calib_s = 0.0
    if args.max_steps:
        steps = int(args.max_steps)
    else:
        model.feature_cache = None  # not deep-copied
        probe = copy.deepcopy(model)
        model.feature_cache = probe.feature_cache = shared_cache
        c_cfg = copy.deepcopy(cfg)
        c_cfg["train"].update(max_steps=int(args.calib_steps), ckpt_every=10 ** 9, log_every=10 ** 9)
        c_cfg["train"].pop("epochs", None)
        t0 = time.perf_counter()
        fit(probe, train_set, c_cfg, out_dir / "calibration", resume=False)
        calib_s = time.perf_counter() - t0
        del probe
        left = budget - (time.perf_counter() - t_start)
        steps = max(10, int(0.92 * left * args.calib_steps / calib_s))
        if not args.fill_budget:  # the preset's step count when it fits the budget
            steps = min(steps, int(cfg["train"]["max_steps"]))
    cfg["train"]["max_steps"] = steps
    cfg["train"].pop("epochs", None)
    t_fit0 = time.perf_counter()
    fit(model, train_set, cfg, out_dir / "fit", resume=False)
    t_fit = time.perf_counter() - t_fit0
    t_train = time.perf_counter() - t_start
    load_end = os.getloadavg()
    logs = [json.loads(x) for x in (out_dir / "fit" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    first = {k: v for k, v in logs[0].items() if k.startswith("loss")} if logs else {}
    last = {k: v for k, v in logs[-1].items() if k.startswith("loss")} if logs else {}

    # 3. held-out metrics and timings (fp32, batch 1)
    keep = ("f1", "precision", "recall", "matched_iou", "ari", "pq", "sq", "rq", "pq_std", "pid_macro_purity",
            "pid_macro_efficiency", "pid_macro_f1", "pid_accuracy", "num_events", "forward_s_per_event",
            "postprocess_s_per_event", "num_gt", "num_pred")

    def kept(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k in keep or k.startswith(("recall_size_", "num_gt_size_"))}
    res = {"level": level, "train_events": len(train_set), "max_steps": steps, "batch_size": bs,
           "amp": cfg["train"].get("amp"), "amp_cpu": cfg["train"].get("amp_cpu"), "feature_cache_s": t_cache,
           "calibration_s": calib_s, "fit_s": t_fit, "total_train_wall_s": t_train,
           "step_s": t_fit / steps, "loadavg_start": load_start, "loadavg_end": load_end,
           "loss_first": first, "loss_last": last,
           "decoder_params": sum(p.numel() for p in model.decoder.parameters()),
           "full_in_channels": model.full_in_channels, "eval": {}}
    for sp, ds in eval_sets.items():
        metrics = evaluate_model(model, ds, batch_size=1)
        r = kept(metrics)
        r["events"] = len(ds)
        r["postprocess_over_forward"] = metrics["postprocess_s_per_event"] / max(metrics["forward_s_per_event"], 1e-12)
        res["eval"][sp] = r
        if args.cc_eps:
            cc = truth_semantics_clusters(ds, level, args.cc_eps)
            res["eval"][sp]["truth_semantics_clusters"] = {**kept(cc), "eps_voxels": args.cc_eps}
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
    ap.add_argument("--val-events", type=int, default=None, help="events per evaluation split (default all)")
    ap.add_argument("--eval-splits", default="val,test", help="held-out sub-directories of --data to evaluate")
    ap.add_argument("--calib-steps", type=int, default=12, help="steps of the step-rate measurement")
    ap.add_argument("--fill-budget", action="store_true",
                    help="train as many steps as the budget allows (default: the preset's train.max_steps, "
                         "fewer if they do not fit the budget)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cc-eps", type=float, default=1.8,
                    help="also score connected components of the true classes at this radius in voxels (0: off)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from larpanda.atomic import atomic_write_json

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = None
    out = {"weights": args.weights, "data": args.data, "minutes": args.minutes, "threads": args.threads,
           "config": args.config, "set": args.set, "commit": commit, "levels": {}}
    cache: dict = {}
    for level in args.levels.split(","):
        out["levels"][level] = run_level(level, args, cache)
        atomic_write_json(args.out, out)
        print(json.dumps(out["levels"][level], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
