"""Data-loader throughput on one core (issue 3): read + energy cut + transforms + collate, events/s, beside a
naive per-event h5py loop (reference-style) in the same process. Prints one JSON line per row.

    python benchmarks/bench_loader.py                 # 2,000 events of 4,400 raw voxels, batch 16
    python benchmarks/bench_loader.py --events 300    # quicker
    larpanda bench --what loader                      # the same measurement through the CLI

Targets: >= 1,000 events/s and >= 5x the naive loop.
"""

from __future__ import annotations

import argparse
import json

from larpanda.bench.loader import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--points", type=int, default=4400, help="raw voxels per event (about 77%% survive the cut)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--shuffled", action="store_true", help="also measure random-order batches (training)")
    ap.add_argument("--workdir", default=None, help="keep the generated file here (reused if present)")
    args = ap.parse_args()
    for row in run(points=[args.points], n_events=args.events, batch_size=args.batch_size, workdir=args.workdir,
                   shuffled=args.shuffled):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
