"""`larpanda simulate`: synthetic PILArNet-M v2 files from the built-in LArTPC simulator."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "simulate",
        help="generate synthetic PILArNet-M v2 events (HDF5 + _points.npy)",
        description=(
            "Generate MPV/MPR LArTPC events (docs/model.md §5) and write PILArNet-M v2 files. "
            "OUT ending in .h5 writes one file; otherwise OUT/{train,val,test}/sim_<n>_v2.h5. "
            "Event k of a seed is identical whatever --workers."
        ),
    )
    p.add_argument("--events", type=int, required=True, help="total number of events")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="output .h5 file or directory")
    p.add_argument("--split", default="800,100,100",
                   help="train,val,test proportions for a directory OUT (default 800,100,100)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--events-per-file", type=int, default=None, help="split each split into files of at most M events")
    p.add_argument("--start-index", type=int, default=0, help="index of the first event in the seed's stream")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def split_counts(n: int, split: str) -> list[int]:
    """Integer train/val/test sizes proportional to ``split`` that sum to n."""
    from ..errors import UserError

    try:
        w = [float(x) for x in split.split(",")]
    except ValueError:
        raise UserError(f"--split {split!r}: expected three comma-separated numbers, e.g. 800,100,100") from None
    if len(w) != 3 or min(w) < 0 or sum(w) <= 0:
        raise UserError(f"--split {split!r}: expected three non-negative numbers with a positive sum")
    counts = [int(n * x / sum(w)) for x in w]
    counts[0] += n - sum(counts)
    return counts


def plan(n: int, out: str, split: str, per_file: int | None):
    """List of (path, start_index_offset, count) for the files to write."""
    from pathlib import Path

    outp = Path(out)
    if outp.suffix == ".h5":
        return [(outp, 0, n)] if not per_file or per_file >= n else [
            (outp.with_name(f"{outp.stem}_{j:03d}.h5"), a, min(per_file, n - a)) for j, a in enumerate(range(0, n, per_file))
        ]
    files, off = [], 0
    for name, cnt in zip(("train", "val", "test"), split_counts(n, split)):
        if cnt == 0:
            continue
        m = per_file or cnt
        chunks = list(range(0, cnt, m))
        for j, a in enumerate(chunks):
            c = min(m, cnt - a)
            fname = f"sim_{c}_v2.h5" if len(chunks) == 1 else f"sim_{j:03d}_{c}_v2.h5"
            files.append((outp / name / fname, off + a, c))
        off += cnt
    return files


def run(args):
    import sys
    import time

    from ..errors import UserError
    from ..sim.generate import make_pool

    if args.events <= 0:
        raise UserError("--events must be positive")
    if args.workers < 1:
        raise UserError("--workers must be >= 1")
    if args.events_per_file is not None and args.events_per_file < 1:
        raise UserError("--events-per-file must be >= 1")
    out = str(args.out)
    if ".h5" in (out[:-3] if out.endswith(".h5") else out):
        raise UserError(f"--out {args.out}: '.h5' may only appear at the end (loaders replace every '.h5' to find _points.npy)")
    split_counts(args.events, args.split)  # validates --split even for a single .h5 output
    files = plan(args.events, args.out, args.split, args.events_per_file)
    progress = not args.quiet and sys.stderr.isatty()
    t0 = time.perf_counter()
    total = 0
    pool = make_pool(args.workers) if args.workers > 1 else None
    try:
        for path, off, cnt in files:
            total += _one_file(args, pool, path, off, cnt, progress)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    dt = time.perf_counter() - t0
    print(f"simulated {total} events in {dt:.1f} s ({total / dt:.1f} events/s, {args.workers} worker(s))")
    return 0


def _one_file(args, pool, path, off, cnt, progress):
    from ..data import pilarnet
    from ..sim.generate import generate_events

    events = generate_events(cnt, args.seed, start_index=args.start_index + off, workers=args.workers,
                             progress=progress, pool=pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    pilarnet.write_events(path, events, attrs={
        "generator": "larpanda.sim", "seed": args.seed, "first_event_index": args.start_index + off,
        "voxel_size_cm": 0.3, "grid": 768, "origin_cm": 0.0,
    })
    print(f"wrote {path} ({cnt} events)")
    return cnt
