"""Backbone benchmark (see larpanda/bench/backbone.py): one JSON line per (preset, input size).

    python benchmarks/bench_backbone.py [--quick] [--presets panda-base,small,tiny] [--threads 2]
                                        [--points 3000,10000] [--tiles 1,3,9,27] [--reps 3]
                                        [--no-train] [--no-baseline] [--device cuda] [--batch 8] [--gemm]
"""

from __future__ import annotations

import argparse
import json

import torch

from larpanda.bench.backbone import run

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--presets", default="panda-base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--points", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--tiles", default=None, help="fixture tilings, subset of 1,3,9,27")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1, help="events per batch (copies of each input)")
    ap.add_argument("--gemm", action="store_true", help="profile the GEMMs both paths share (a floor under the eval time)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pts = [int(x) for x in a.points.split(",")] if a.points else None
    tiles = [int(x) for x in a.tiles.split(",")] if a.tiles else None
    run(points=pts if pts is not None else ([] if a.tiles else None), quick=a.quick, device=a.device,
        presets=tuple(a.presets.split(",")), train=not a.no_train, baseline=not a.no_baseline, tiles=tiles,
        reps=a.reps, batch=a.batch, gemm=a.gemm, on_row=lambda row: print(json.dumps(row), flush=True))
