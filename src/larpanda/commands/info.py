"""`larpanda info FILE.h5`: what is in a PILArNet-M file (events, points, classes, particles).

Reads the whole file in chunks with the same checks as the loader; a malformed event stops with
``larpanda: error: FILE event K: field: what`` (exit 2) unless ``--skip-bad-events`` is given, in which
case it is counted (and listed with ``--json``) and left out of the statistics.
"""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "info",
        help="summary of a PILArNet-M HDF5 file",
        description="Events, points per event (raw and after the energy cut), class and PID fractions, "
        "particles and interactions per event.",
    )
    p.add_argument("file", help="PILArNet-M .h5 file (v2 or v1)")
    p.add_argument("--energy-threshold", type=float, default=0.13, help="cut E > T MeV for the 'after cut' figures (default 0.13)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--validate", action="store_true", help="also check every writer invariant (docs/design.md §4.4)")
    p.add_argument("--skip-bad-events", action="store_true", help="count and skip malformed events instead of failing")
    p.add_argument("--plot", metavar="OUT.html", default=None, help="also write an HTML statistics report")
    p.set_defaults(func=run)
    return p


def _quantiles(x):
    import numpy as np

    if len(x) == 0:
        return {"mean": None, "median": None, "p05": None, "p95": None, "min": None, "max": None}
    x = np.asarray(x, dtype=float)
    q = np.quantile(x, [0.05, 0.5, 0.95])
    return {"mean": float(x.mean()), "median": float(q[1]), "p05": float(q[0]), "p95": float(q[2]),
            "min": float(x.min()), "max": float(x.max())}


def file_stats(path, energy_threshold: float = 0.13, skip_bad_events: bool = False) -> dict:
    """Statistics of one file as a JSON-able dict (fractions 0..1). Raises DataError on bad events
    unless ``skip_bad_events`` (then ``skipped`` lists their messages)."""
    import numpy as np

    from ..data import pilarnet
    from ..data.event import PID_CLASSES, SEMANTIC_CLASSES
    from ..errors import DataError

    n = pilarnet.num_events(path)
    if pilarnet.points_path(path).exists():
        pilarnet.read_points_index(path, build=False)  # a stale/corrupt _points.npy would break the loader
    with pilarnet.open_h5(path) as f:
        version = pilarnet.file_version(f, path)
    raw, cut, parts, inters = [], [], [], []
    motif_raw = np.zeros(5, np.int64)
    motif_cut = np.zeros(5, np.int64)
    pid_cut = np.zeros(6, np.int64)
    skipped = []

    def add(ev):
        keep = ev.energy > np.float32(energy_threshold)
        raw.append(len(ev))
        cut.append(int(keep.sum()))
        motif_raw[:] += np.bincount(ev.segment_motif, minlength=5)[:5]
        motif_cut[:] += np.bincount(ev.segment_motif[keep], minlength=5)[:5]
        pid_cut[:] += np.bincount(ev.segment_pid[keep], minlength=6)[:6]
        parts.append(ev.num_particles)
        inters.append(ev.num_interactions)

    for a in range(0, n, pilarnet.READ_CHUNK):
        b = min(a + pilarnet.READ_CHUNK, n)
        try:
            events = pilarnet.read_events(path, a, b)
        except DataError:
            if not skip_bad_events:
                raise
            events = []
            for k in range(a, b):  # isolate the bad event(s)
                try:
                    events.extend(pilarnet.read_events(path, k, k + 1))
                except DataError as exc:
                    skipped.append(str(exc))
        for ev in events:
            add(ev)

    def frac(counts, names):
        tot = counts.sum()
        return {name: (float(c) / tot if tot else 0.0) for name, c in zip(names, counts)}

    return {
        "file": str(path),
        "version": version,
        "events": n,
        "events_read": len(raw),
        "skipped_events": len(skipped),
        "skipped": skipped,
        "energy_threshold_mev": energy_threshold,
        "points_per_event_raw": _quantiles(raw),
        "points_per_event_after_cut": _quantiles(cut),
        "events_with_1024_raw_points": int(np.sum(np.asarray(raw) >= 1024)) if raw else 0,
        "semantic_fraction_raw": frac(motif_raw, SEMANTIC_CLASSES),
        "semantic_fraction_after_cut": frac(motif_cut, SEMANTIC_CLASSES),
        "pid_fraction_after_cut": frac(pid_cut, PID_CLASSES),
        "particles_per_event": _quantiles(parts),
        "interactions_per_event": _quantiles(inters),
    }


def format_table(s: dict) -> str:
    def q(d, fmt="{:.0f}"):
        if d["median"] is None:
            return "-"
        return f"median {fmt.format(d['median'])}  p05 {fmt.format(d['p05'])}  p95 {fmt.format(d['p95'])}  " \
               f"mean {d['mean']:.1f}  max {fmt.format(d['max'])}"

    lines = [
        f"file                   {s['file']}  (PILArNet-M v{s['version']})",
        f"events                 {s['events']}" + (f"  ({s['skipped_events']} bad, skipped)" if s["skipped_events"] else ""),
        f"points/event raw       {q(s['points_per_event_raw'])}",
        f"points/event E>{s['energy_threshold_mev']:g}   {q(s['points_per_event_after_cut'])}",
        f"events >= 1024 raw     {s['events_with_1024_raw_points']}",
        f"particles/event        {q(s['particles_per_event'])}",
        f"interactions/event     {q(s['interactions_per_event'])}",
        "class fraction         " + "  ".join(f"{k} {v:.1%}" for k, v in s["semantic_fraction_raw"].items()) + "  (raw)",
        "                       " + "  ".join(f"{k} {v:.1%}" for k, v in s["semantic_fraction_after_cut"].items()) + "  (after cut)",
        "PID fraction           " + "  ".join(f"{k} {v:.1%}" for k, v in s["pid_fraction_after_cut"].items()) + "  (after cut)",
    ]
    return "\n".join(lines)


def run(args):
    import json
    import os
    import sys

    from ..data import pilarnet
    from ..errors import UserError

    if args.validate and not args.skip_bad_events:
        pilarnet.validate(args.file)
    stats = file_stats(args.file, args.energy_threshold, args.skip_bad_events)
    if args.plot:
        try:
            from ..viz.display import stats_report
        except ImportError:
            raise UserError("--plot: the HTML report (larpanda.viz.display.stats_report) is not available in this build") from None
        stats_report(args.file, args.plot)
    try:
        if args.json:
            print(json.dumps(stats))
        else:
            print(format_table(stats))
            for msg in stats["skipped"][:10]:
                print(f"skipped: {msg}")
            if args.plot:
                print(f"report written to {args.plot}")
        sys.stdout.flush()
    except BrokenPipeError:  # `larpanda info F | head`: stop quietly, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
