"""Simulator throughput (``larpanda bench --what simulate``).

Rows:
* ``generate``: events/s of ``larpanda.sim.generate_events`` on one process, wall clock and per CPU
  second (the CPU figure is robust to a shared machine), beside a fixed reference workload timed in the
  same process (``baseline_s``: 1e6-iteration Python loop + 1e6-float numpy sort), so that
  ``events_per_baseline`` compares machines.
* ``voxelize``: exact chord-length traversal of all step segments of the same events vs the naive
  alternative of docs/model.md §5.4 (sub-steps of ≤ 0.3 mm, deposit at the sub-step midpoints); ratio =
  naive time / exact time.
"""

from __future__ import annotations

import time

import numpy as np


def _reference_workload() -> float:
    t = time.process_time()
    acc = 0
    for i in range(1_000_000):
        acc += i & 7
    np.sort(np.random.default_rng(0).random(1_000_000))
    return time.process_time() - t


def _segments(n_events: int, seed: int = 0):
    """All step segments (p0, p1, dE) of n events, by re-running the transport stage."""
    import random

    from ..sim.generate import simulate_event

    P0, P1, E = [], [], []
    for k in range(n_events):
        rng = np.random.default_rng([seed, k])
        rnd = random.Random(int(rng.integers(2**62)))
        _, cas, heavy = simulate_event(rng, rnd)
        seg, _ = cas.arrays()
        P0 += heavy["p0"] + [seg["p0"]]
        P1 += heavy["p1"] + [seg["p1"]]
        E += heavy["dE"] + [seg["dE"]]
    return np.concatenate(P0), np.concatenate(P1), np.concatenate(E)


def _substep(p0, p1, dE, step=0.03):
    L = np.linalg.norm(p1 - p0, axis=1)
    n = np.maximum(np.ceil(L / step).astype(np.int64), 1)
    idx = np.repeat(np.arange(len(L)), n)
    k = np.arange(idx.size) - (np.cumsum(n) - n)[idx]
    t = (k + 0.5) / n[idx]
    pts = p0[idx] + t[:, None] * (p1 - p0)[idx]
    key = np.floor(pts / 0.3).astype(np.int64)
    key = (key[:, 0] * 1000 + key[:, 1]) * 1000 + key[:, 2]
    u, inv = np.unique(key, return_inverse=True)
    return u, np.bincount(inv, dE[idx] / n[idx])


def run(points=None, quick: bool = False, device: str = "cpu") -> list[dict]:
    from ..sim import generate_events
    from ..sim.voxelize import deposit_segments

    n = 20 if quick else 200
    generate_events(2, seed=0)  # warm-up: range tables, imports
    base = _reference_workload()
    t0, c0 = time.perf_counter(), time.process_time()
    evs = generate_events(n, seed=0)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = [{
        "what": "generate", "events": n, "mean_points_raw": float(np.mean([len(e) for e in evs])),
        "events_per_s_wall": n / wall, "events_per_cpu_s": n / cpu, "baseline_s": base,
        "events_per_baseline": n / cpu * base,
    }]
    p0, p1, dE = _segments(5 if quick else 20)
    t = time.process_time()
    deposit_segments(p0, p1, dE)
    exact = time.process_time() - t
    t = time.process_time()
    _substep(p0, p1, dE)
    naive = time.process_time() - t
    rows.append({"what": "voxelize", "segments": int(len(dE)), "exact_s": exact, "baseline_substep_0.3mm_s": naive,
                 "ratio": naive / max(exact, 1e-9)})
    return rows
