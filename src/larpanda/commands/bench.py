"""`larpanda bench`: throughput and memory benchmarks, one JSON line per measurement.

Each benchmark lives in ``larpanda/bench/<what>.py`` as ``run(points=None, quick=False, device="cpu")``
returning a list of JSON-able dicts; every figure is reported beside a baseline run in the same process.
"""

from __future__ import annotations

BENCHMARKS = ("loader", "backbone", "uresnet", "simulate")


def add_parser(sub):
    p = sub.add_parser(
        "bench",
        help="throughput and memory benchmarks (JSON lines)",
        description="Run benchmarks; each prints one JSON line per measurement, with a same-process baseline and the ratio.",
    )
    p.add_argument("--what", default="loader,backbone", help=f"comma list of: {', '.join(BENCHMARKS)} (default: loader,backbone)")
    p.add_argument("--points", default=None, help="comma list of point counts, e.g. 1000,3000,10000 (where the benchmark takes sizes)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and sizes")
    p.add_argument("--out", default=None, help="also write all rows to this JSON file")
    p.set_defaults(func=run)
    return p


def run(args):
    import importlib
    import json

    from ..atomic import atomic_write_json
    from ..errors import UserError

    names = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"--what: unknown benchmark {', '.join(unknown)} (choose from {', '.join(BENCHMARKS)})")
    try:
        points = [int(x) for x in args.points.split(",")] if args.points else None
    except ValueError:
        raise UserError(f"--points: expected comma-separated integers, got {args.points!r}") from None
    rows = []
    for name in names:
        module = importlib.import_module(f"larpanda.bench.{name}")
        for row in module.run(points=points, quick=args.quick, device=args.device):
            row = {"bench": name, **row}
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        atomic_write_json(args.out, rows)
    return 0
