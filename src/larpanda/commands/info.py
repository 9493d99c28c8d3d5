"""`larpanda info FILE.h5`: what is in a PILArNet-M file (events, points, classes, particles).

Reads the whole file in chunks with the same checks as the loader (`larpanda.data.stats.file_stats`); a
malformed event stops with ``larpanda: error: FILE event K: field: what`` (exit 2) unless
``--skip-bad-events`` is given, in which case it is counted (and listed with ``--json``) and left out of
the statistics.
"""

from __future__ import annotations

from ..constants import ENERGY_THRESHOLD_MEV


def add_parser(sub):
    p = sub.add_parser(
        "info",
        help="summary of a PILArNet-M HDF5 file",
        description="Events, points per event (raw and after the energy cut), class and PID fractions, "
        "particles and interactions per event.",
    )
    p.add_argument("file", help="PILArNet-M .h5 file (v2 or v1)")
    p.add_argument("--energy-threshold", type=float, default=ENERGY_THRESHOLD_MEV,
                   help=f"cut E > T MeV for the 'after cut' figures (default {ENERGY_THRESHOLD_MEV})")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--validate", action="store_true", help="also check every writer invariant (docs/design.md §4.4)")
    p.add_argument("--skip-bad-events", action="store_true", help="count and skip malformed events instead of failing")
    p.add_argument("--plot", metavar="OUT.html", default=None, help="also write an HTML statistics report")
    p.set_defaults(func=run)
    return p


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
    from ..data.stats import file_stats
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
