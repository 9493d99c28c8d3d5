"""Simulator acceptance: simulate N events with the CLI, validate, measure spec-data §3 statistics.

    python benchmarks/bench_simulate.py [--events 1000] [--seed 0] [--out /tmp/larpanda_sim_acc]

Prints the markdown table for docs/benchmarks.md ("Simulator") and writes ``OUT/acceptance.json``.
Speed: wall time of ``larpanda simulate`` (one worker) and, from ``larpanda bench --what simulate``, the
CPU-time rate, which is what one core achieves on a machine that is not shared.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="/tmp/larpanda_sim_acc")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    h5 = out / f"sim_{a.events}_v2.h5"
    cmd = [sys.executable, "-m", "larpanda", "simulate", "--events", str(a.events), "--seed", str(a.seed),
           "--out", str(h5), "--workers", str(a.workers), "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(r.stdout.strip(), r.stderr.strip()[-2000:])
    r.check_returncode()

    from larpanda.data import pilarnet
    from larpanda.sim.stats import check, summarize, table

    info = pilarnet.validate(h5)  # raises DataError at the first violation
    events = pilarnet.read_events(h5)
    s = summarize(events)
    res = check(s)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"command": " ".join(cmd[1:]), "git": git, "wall_s_including_startup": wall,
              "events_per_s_wall": a.events / wall, "validate": info,
              "summary": {k: v for k, v in s.items() if k != "per_event"},
              "all_within_targets": all(v[3] for v in res.values())}
    (out / "acceptance.json").write_text(json.dumps(report, indent=1))
    print(table(s))
    print(f"\nvalidate: {info}\nlarpanda simulate: {a.events} events in {wall:.1f} s wall "
          f"({a.events / wall:.1f} events/s incl. start-up, {a.workers} worker) at {git}")
    print("all within targets:", report["all_within_targets"])
    return 0 if report["all_within_targets"] else 1


if __name__ == "__main__":
    sys.exit(main())
