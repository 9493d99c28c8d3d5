"""Pretraining throughput of a preset (default `cpu-small`) on this machine.

    python benchmarks/bench_pretrain.py [--config cpu-small] [--steps 10] [--events 40] [--threads 2]

Simulates ``--events`` events, runs ``--steps`` optimizer steps of `larpanda.train.fit` with the preset
(after one warm-up step, excluded), and reports steps/s, events/s and points/step. Because the
machine may be shared, it also times a fixed baseline workload (a 512x512 fp32 matmul chain, 2 threads)
in the same process and reports the step time as a RATIO to it, which is comparable across runs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def baseline_seconds(reps: int = 200) -> float:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(512, 512, generator=g)
    b = torch.randn(512, 512, generator=g)
    t0 = time.perf_counter()
    for _ in range(reps):
        a = torch.tanh(a @ b)
    return time.perf_counter() - t0


def main(argv=None):
    from larpanda.commands.pretrain import build_dataset, build_task
    from larpanda.config import apply_overrides, load_config
    from larpanda.data.pilarnet import write_events
    from larpanda.sim.generate import generate_events
    from larpanda.train import fit

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="cpu-small")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--events", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--out", default=None, help="write the result JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = apply_overrides(load_config(args.config, "pretrain"), args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        h5 = Path(tmp) / "sim.h5"
        write_events(h5, generate_events(args.events, seed=123))
        ds = build_dataset(cfg, [h5])
        base0 = baseline_seconds()
        res = {}
        for name, steps in (("warmup", 1), ("timed", args.steps)):
            c = apply_overrides(cfg, [f"train.max_steps={steps}", "train.progress=false", "train.log_every=1",
                                      "train.ckpt_every=100000"])
            torch.manual_seed(0)
            task = build_task(c)
            r = fit(task, ds, c, Path(tmp) / name)
            res[name] = r
        recs = [json.loads(x) for x in (Path(tmp) / "timed" / "metrics.jsonl").read_text().splitlines()]
        base1 = baseline_seconds()
    step_s = sum(x["step_time_s"] for x in recs) / len(recs)
    bs = int(cfg["train"]["batch_size"])
    base = (base0 + base1) / 2
    out = {
        "config": args.config, "threads": args.threads, "steps": args.steps, "batch_size": bs,
        "step_time_s": step_s, "steps_per_s": 1 / step_s, "events_per_s": bs / step_s,
        "baseline_s": base, "baseline_drift": base1 / base0, "step_over_baseline": step_s / base,
        "student_params": sum(p.numel() for p in task.student.parameters() if p.requires_grad),
        "final_loss": res["timed"]["loss"],
    }
    print(json.dumps(out, indent=2))
    if args.out:
        from larpanda.atomic import atomic_write_json

        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
