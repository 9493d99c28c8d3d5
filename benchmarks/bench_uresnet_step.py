"""UResNet training step, this checkout against another revision's `larpanda/nn/uresnet.py`, in one process.

    python benchmarks/bench_uresnet_step.py --baseline REV [--preset uresnet-deep] [--events 32] [--threads 2]

Both networks get the same weights and the same batches of 4 simulated events (`larpanda.sim`, seed 2026, the
0.13 MeV cut, the voxel lattice as `--mode uresnet` convolves on it); each step is forward + backward of the
network alone (no loss, optimizer or data loading). The two are timed interleaved, in alternating order, over
three passes of the batches. Prints one JSON line: median seconds per step of each and ``ratio`` = baseline / this
(> 1: this checkout is faster), plus the largest difference of their outputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from larpanda.data.transforms import prepare_batch
from larpanda.nn import uresnet as current
from larpanda.sim.generate import generate_events


def baseline_module(rev: str):
    """`larpanda/nn/uresnet.py` as of git revision ``rev``, imported as a standalone module."""
    root = Path(__file__).resolve().parents[1]
    text = subprocess.run(["git", "show", f"{rev}:src/larpanda/nn/uresnet.py"], cwd=root, check=True,
                          capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "uresnet_baseline.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("uresnet_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batches(n_events: int, batch_size: int = 4) -> list:
    events = generate_events(n_events, seed=2026)
    return [prepare_batch(events[i:i + batch_size]) for i in range(0, len(events) - batch_size + 1, batch_size)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="git revision of the reference implementation")
    ap.add_argument("--preset", default="uresnet-deep")
    ap.add_argument("--events", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = baseline_module(a.baseline)
    torch.manual_seed(0)
    net = current.build_uresnet(a.preset, in_channels=1, num_classes=5)
    ref = base.build_uresnet(a.preset, in_channels=1, num_classes=5)
    ref.load_state_dict(net.state_dict())
    data = batches(a.events)

    def step(model, point):
        out = model(point["energy"].float(), current.batch_coords(point["voxel_coord"], point["batch"]))
        out.square().mean().backward()
        return out.detach()

    diff = float((step(net, data[0]) - step(ref, data[0])).abs().max())
    times = {"this": [], "baseline": []}
    for rep in range(3):
        order = [("this", net), ("baseline", ref)] if rep % 2 == 0 else [("baseline", ref), ("this", net)]
        for point in data:
            for name, model in order:
                t0 = time.perf_counter()
                step(model, point)
                times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(json.dumps({"preset": a.preset, "baseline": a.baseline, "threads": a.threads, "steps": len(times["this"]),
                      "points_per_batch": float(np.mean([len(p["energy"]) for p in data])),
                      "this_s": round(med["this"], 4), "baseline_s": round(med["baseline"], 4),
                      "ratio": round(med["baseline"] / med["this"], 3), "max_abs_diff": diff}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
