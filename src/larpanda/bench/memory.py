"""Inference memory benchmark: peak resident memory and time of ONE event's inference, per model and size,
and the fit of the `larpanda.io.memory` estimate's constants.

Each case runs in a fresh subprocess (``python -m larpanda.bench.memory --case ...``): build the model,
build the event, then measure the call that users make (``Backbone.embed`` or the task's ``predict``) in
eval mode under no_grad. Peak = VmHWM after the call minus VmRSS before it, with the high-water mark reset
just before the call (``/proc/self/clear_refs``), so it is the extra resident memory the event needed,
allocator overhead included, weights excluded.

Events: ``scattered`` = unique random voxels in the 768³ grid, E = 0.5 MeV (all above the cut; almost no
two voxels share a pooled cell, so every stage keeps ~N points: the worst case, as the corpus case
huge_event_200k), ``tracks`` = `bench.loader.synthetic_event` (random-walk tracks + 20 % LED; pools
like real events).
"""

from __future__ import annotations

import gc
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV

TASKS = ("backbone", "semantic-linear", "semantic-decoder", "panoptic", "uresnet")
KINDS = ("scattered", "tracks")
# (task, preset, kind, points): the calibration set of docs/benchmarks.md "Large inputs"
CASES = (
    [("backbone", "tiny", "scattered", n) for n in (10_000, 25_000, 50_000, 100_000)]
    + [("backbone", "tiny", "tracks", n) for n in (25_000, 100_000)]
    + [("backbone", "small", "scattered", n) for n in (10_000, 25_000, 50_000)]
    + [("backbone", "small", "tracks", n) for n in (25_000, 50_000)]
    + [("backbone", "panda-base", "scattered", n) for n in (5_000, 10_000, 20_000)]
    + [("backbone", "panda-base", "tracks", n) for n in (10_000, 25_000, 50_000)]
    + [("semantic-linear", "tiny", "scattered", 50_000), ("semantic-decoder", "tiny", "scattered", 25_000),
       ("semantic-decoder", "tiny", "tracks", 50_000), ("panoptic", "tiny", "scattered", 25_000),
       ("panoptic", "tiny", "tracks", 50_000), ("panoptic", "panda-base", "tracks", 20_000)]
    + [("uresnet", "uresnet-base", k, n) for k in KINDS for n in (10_000, 40_000)]
)


def make_event(kind: str, n: int, seed: int = 0):
    """An `Event` with about ``n`` points above the 0.13 MeV cut (exactly n for ``scattered``)."""
    from ..data.event import Event
    from .loader import synthetic_event

    rng = np.random.default_rng(seed)
    if kind == "scattered":
        vox = rng.choice(768 ** 3, n, replace=False)
        p = np.zeros((n, 8), np.float32)
        p[:, 0], p[:, 1], p[:, 2] = vox // 768 ** 2, (vox // 768) % 768, vox % 768
        p[:, 3] = p[:, 4] = 0.5
        return Event(point=p, cluster=np.array([[n, -1, -1, -1, 4, -1]], np.int64))
    if kind == "tracks":
        return synthetic_event(rng, int(n / 0.77), n_particles=max(8, n // 2000))
    raise ValueError(f"unknown event kind {kind!r} (choose from {', '.join(KINDS)})")


def build(task: str, preset: str):
    """A randomly initialised model of ``task`` on the model preset (UResNet preset for ``uresnet``)."""
    from ..config import load_config
    from ..io import build_model

    if task == "backbone":
        return build_model(preset)
    if task == "uresnet":
        from ..nn.uresnet import PRESETS
        from ..tasks.semantic import SemanticModel

        return SemanticModel("uresnet", uresnet=dict(PRESETS[preset]))
    bb = load_config(preset, "model")
    if task.startswith("semantic-"):
        from ..tasks.semantic import SemanticModel

        return SemanticModel(task.split("-", 1)[1], backbone=bb)
    if task == "panoptic":
        from ..tasks.panoptic import PanopticModel

        return PanopticModel(bb, level="particle", mode="decoder")
    raise ValueError(f"unknown task {task!r} (choose from {', '.join(TASKS)})")


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(field)


def measure_case(task: str, preset: str, kind: str, n: int, threads: int = 2) -> dict:
    """Measure one case in this process (see the module docstring). Returns a JSON-able dict."""
    import torch

    from ..data.transforms import prepare
    from ..io import memory

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    memory.set_limits(max_memory_gb=math.inf)
    model = build(task, preset).eval()
    ev = make_event(kind, n)
    d = prepare(ev, energy_threshold=ENERGY_THRESHOLD_MEV)
    arch = memory.architecture(model.config)
    counts = memory.stage_counts(d["grid_coord"], d["offset"], arch["strides"])
    terms = memory.terms(arch, counts)
    del d
    call = model.embed if task == "backbone" else model.predict
    gc.collect()
    base_kb = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        hwm = lambda: _status_kb("VmHWM")  # noqa: E731
    except OSError:  # not Linux: lifetime peak (model building stays below the call's peak)
        import resource

        hwm = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    t0 = time.perf_counter()
    call(ev)
    seconds = time.perf_counter() - t0
    peak_kb = hwm()
    return {"task": task, "preset": preset, "kind": kind, "points": int(counts[0]), "counts": counts,
            "kind_of_estimate": arch["kind"], "terms": terms.tolist(), "peak_bytes": (peak_kb - base_kb) * 1024,
            "base_rss_bytes": base_kb * 1024, "seconds": seconds, "threads": threads,
            "estimate_bytes": memory.estimate_bytes(model.config, counts)}


def run(cases=CASES, threads: int = 2, on_row=None, timeout: float = 1800) -> list[dict]:
    """Measure every (task, preset, kind, points) case in its own subprocess."""
    rows = []
    for task, preset, kind, n in cases:
        cmd = [sys.executable, "-m", "larpanda.bench.memory", "--case", f"{task}:{preset}:{kind}:{n}",
               "--threads", str(threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=dict(os.environ))
        if r.returncode != 0:
            row = {"task": task, "preset": preset, "kind": kind, "points": n, "error": r.stderr.strip()[-400:]}
        else:
            row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def fit(rows: list[dict], margin: float = 1.15) -> dict:
    """Constants of `larpanda.io.memory`: per estimate kind, the non-negative coefficients c minimising
    Σ_i (t_i·c)/m_i subject to t_i·c ≥ m_i (the tightest upper envelope of the measured peaks m_i, in
    relative terms), times ``margin`` (for the run-to-run spread of peak RSS). Returns {"ptv3": [...]
    (`memory.PTV3_COEFFS`), "uresnet": [...] (`memory.URESNET_COEFFS`), "ratios": measured/estimate per row}."""
    from scipy.optimize import linprog

    good = [r for r in rows if "error" not in r and r["peak_bytes"] > 0]
    out: dict = {}
    for kind in ("ptv3", "uresnet"):
        sel = [r for r in good if r["kind_of_estimate"] == kind]
        if not sel:
            continue
        t = np.array([r["terms"] for r in sel], float)
        m = np.array([r["peak_bytes"] for r in sel], float)
        res = linprog(c=(t / m[:, None]).sum(0), A_ub=-t, b_ub=-m, bounds=[(0, None)] * t.shape[1], method="highs")
        if not res.success:
            raise RuntimeError(f"fit failed for {kind}: {res.message}")
        out[kind] = (res.x * margin).tolist()
    out["ratios"] = []
    for r in good:
        c = np.array(out[r["kind_of_estimate"]])
        out["ratios"].append(r["peak_bytes"] / float(np.array(r["terms"]) @ c))
    return out


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", required=True, help="task:preset:kind:points")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    task, preset, kind, n = a.case.split(":")
    print(json.dumps(measure_case(task, preset, kind, int(n), a.threads)))


if __name__ == "__main__":
    _main()
