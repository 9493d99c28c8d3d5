"""Data-loader throughput on one core: the training data path (what `larpanda.train.fit` iterates for a
semantic or panoptic task: shuffled batches of 4 from `larpanda.train.data.batch_stream` with the default
collate; read + checks + energy cut + transforms + collate), events/s, beside a naive per-event h5py loop
(reference-style) over the same events in the same order, in the same process, on events written by the
simulator. Prints one JSON line per row (the second adds the rotate/flip training augmentation, which the
naive loop does not do).

    python benchmarks/bench_loader.py                       # 2,000 simulated events, batch 4
    python benchmarks/bench_loader.py --events 300 --quick  # quicker
    larpanda bench --what loader                            # the same measurement through the CLI

Targets: >= 1,000 events/s and >= 5x the naive loop (first row). Time it on an idle machine.
"""

from __future__ import annotations

import argparse
import json

from larpanda.bench.loader import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000, help="simulated events in the file")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="simulator stream and training seed")
    ap.add_argument("--quick", action="store_true", help="one repetition, no augmentation row")
    ap.add_argument("--workdir", default=None, help="keep the simulated file here (reused if present)")
    args = ap.parse_args()
    for row in run(quick=args.quick, n_events=args.events, batch_size=args.batch_size, workdir=args.workdir,
                   seed=args.seed):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
