"""Representation check: frozen features of the pretrained `cpu-small` backbone vs a randomly
initialised backbone of the same architecture, each probed by the SAME linear head trained on 1 % of
the labelled simulated training events; mIoU (5 motif classes) on held-out simulated events.

    larpanda simulate --events 200 --seed 11 --out /tmp/rep/train.h5
    larpanda simulate --events 20  --seed 12 --out /tmp/rep/test.h5
    larpanda pretrain --config cpu-small --data /tmp/rep/train.h5 --out /tmp/rep/pt
    python benchmarks/bench_representation.py --weights /tmp/rep/pt/backbone \
        --train /tmp/rep/train.h5 --test /tmp/rep/test.h5 --out /tmp/rep/probe.json

The probe: features standardized with the labelled-subset statistics, a Linear(C, 5) trained by full-batch
Adam (lr 1e-2, 300 iterations, cross-entropy). Labelled subset = the first ceil(1 % x N) training
events (as the reference label-fraction experiments: first N events, spec-model §3). Target: pretrained
mIoU - random mIoU >= 15 points.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch


def features(model, events, thr=0.13):
    xs, ys = [], []
    for ev in events:
        xs.append(model.embed(ev, energy_threshold=thr))
        ys.append(ev.segment_motif[ev.energy > thr])
    return np.concatenate(xs), np.concatenate(ys)


def probe(xtr, ytr, xte, iters=300, seed=0):
    torch.manual_seed(seed)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a = torch.from_numpy((xtr - mu) / sd).float()
    b = torch.from_numpy(ytr).long()
    head = torch.nn.Linear(a.shape[1], 5)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(iters):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(a), b).backward()
        opt.step()
    with torch.no_grad():
        return head(torch.from_numpy((xte - mu) / sd).float()).argmax(1).numpy()


def main(argv=None):
    from larpanda.data.pilarnet import read_events
    from larpanda.io import build_model, load_model
    from larpanda.metrics.semantic import semantic_metrics

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True, help="pretrained backbone dir (RUN/backbone)")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--label-fraction", type=float, default=0.01)
    p.add_argument("--seeds", type=int, default=3, help="random-init backbones / probe seeds to average")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    train = read_events(args.train)
    test = read_events(args.test)
    k = max(1, math.ceil(args.label_fraction * len(train)))
    lab = train[:k]
    t0 = time.time()
    pre = load_model(args.weights)
    res = {"label_fraction": args.label_fraction, "labelled_events": k, "test_events": len(test)}
    xtr, ytr = features(pre, lab)
    xte, yte = features(pre, test)
    res["labelled_points"] = int(len(ytr))
    pre_miou = [semantic_metrics(probe(xtr, ytr, xte, seed=s), yte)["mIoU"] for s in range(args.seeds)]
    rnd_miou = []
    for s in range(args.seeds):
        torch.manual_seed(1000 + s)
        rnd = build_model(pre.config)
        a, b = features(rnd, lab)
        c, _ = features(rnd, test)
        rnd_miou.append(semantic_metrics(probe(a, b, c, seed=s), yte)["mIoU"])
    res.update(pretrained_mIoU=float(np.mean(pre_miou)), random_mIoU=float(np.mean(rnd_miou)),
               pretrained_runs=pre_miou, random_runs=rnd_miou, seconds=time.time() - t0)
    res["gain_points"] = 100 * (res["pretrained_mIoU"] - res["random_mIoU"])
    res["target_met"] = res["gain_points"] >= 15
    print(json.dumps(res, indent=2))
    if args.out:
        from larpanda.atomic import atomic_write_json

        atomic_write_json(args.out, res)


if __name__ == "__main__":
    main()
