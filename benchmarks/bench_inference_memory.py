"""Inference memory benchmark (see larpanda/bench/memory.py): one JSON line per case, then the fit.

    python benchmarks/bench_inference_memory.py --out mem.jsonl [--tasks backbone] [--presets tiny]
                                                [--max-points 50000] [--threads 2]
    python benchmarks/bench_inference_memory.py --fit mem.jsonl [--margin 1.15]
    python benchmarks/bench_inference_memory.py --case backbone:tiny:scattered:200000 --out mem.jsonl
"""

from __future__ import annotations

import argparse
import json

from larpanda.bench import memory as M


def _row_text(r: dict) -> str:
    if "error" in r:
        return f"{r['task']:17s} {r['preset']:12s} {r['kind']:9s} {r['points']:>8,}  ERROR {r['error'][-200:]}"
    return (f"{r['task']:17s} {r['preset']:12s} {r['kind']:9s} {r['points']:>8,}  peak {r['peak_bytes'] / 2**20:8.1f} MiB"
            f"  estimate {r['estimate_bytes'] / 2**20:8.1f} MiB  {r['seconds']:7.2f} s  stages {r['counts']}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="append one JSON line per case to this file")
    ap.add_argument("--fit", default=None, help="fit the estimate's constants to the rows of this JSONL file")
    ap.add_argument("--margin", type=float, default=1.15)
    ap.add_argument("--case", action="append", default=[], help="task:preset:kind:points (repeatable)")
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--presets", default=None)
    ap.add_argument("--max-points", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.fit:
        rows = [json.loads(line) for line in open(a.fit) if line.strip()]
        res = M.fit(rows, a.margin)
        for r, q in zip([r for r in rows if "error" not in r and r["peak_bytes"] > 0], res["ratios"]):
            print(f"{_row_text(r)}  measured/fitted {q:.2f}")
        print("PTV3_COEFFS = (" + ", ".join(f"{x:.4g}" for x in res["ptv3"]) + ")")
        if "uresnet" in res:
            print("URESNET_COEFFS = (" + ", ".join(f"{x:.4g}" for x in res["uresnet"]) + ")")
    else:
        cases = [tuple(c.split(":")[:3]) + (int(c.split(":")[3]),) for c in a.case] or list(M.CASES)
        if a.tasks:
            cases = [c for c in cases if c[0] in a.tasks.split(",")]
        if a.presets:
            cases = [c for c in cases if c[1] in a.presets.split(",")]
        if a.max_points:
            cases = [c for c in cases if c[3] <= a.max_points]

        def on_row(r):
            print(_row_text(r), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")

        M.run(cases, a.threads, on_row)
