"""Event generation: MPV/MPR primaries (docs/model.md §5.1), transport, voxelisation and Supera-like
labelling (docs/model.md §5.5), LED background (docs/model.md §5.6). One event = ``generate_event(seed, index)``;
its random stream is ``np.random.default_rng([seed, index])`` so event k is the same whatever the
number of workers.

Frame: cm, the voxel box spans [0, 230.4) on each axis (origin 0; cluster_extra vertices use it).
"""

from __future__ import annotations

import math
import random

import numpy as np

from ..constants import MIN_RAW_POINTS  # events below are regenerated from the same stream (v2 test split is ~pre-filtered)
from ..data.event import Event
from . import physics as ph
from .labels import Registry, assemble
from .particles import heavy_track
from .showers import Cascade

# --- primaries (docs/model.md §5.1; multiplicities tuned to the PILArNet-M statistics, see docs/benchmarks.md) ---
# (names, min, max, weight, KE range GeV)
MPV_GROUPS = [
    (("e-", "e+", "mu-", "mu+"), 0, 1, 3.0, (0.0, 3.0)),
    (("pi0",), 0, 2, 1.0, (0.0, 1.0)),
    (("pi+", "pi-"), 0, 2, 1.0, (0.0, 1.0)),
    (("p",), 0, 4, 3.0, (0.0, 1.0)),
    (("gamma",), 0, 2, 1.0, (0.0, 1.0)),
]
MPV_MULTI = (2, 7)
MPV_MARGIN = 30.0  # cm
MPR_GROUPS = [  # the reference recipe (SBN gen_mpvmpr.fcl), tuned: fewer through-going muons, rain muons 0–0.5 GeV
    (("mu+", "mu-"), 0, 2, 2.0, (0.0, 20.0)),  # reference: max 5, weight 5
    (("mu+", "mu-"), 0, 5, 6.0, (0.0, 0.5)),  # reference: weight 5, KE 0–2 GeV
    (("e+", "e-"), 0, 2, 1.0, (0.0, 1.0)),
    (("gamma",), 0, 3, 2.0, (0.0, 1.0)),
    (("p",), 0, 5, 1.0, (0.0, 1.0)),
]
# reference: two blocks of 2–4 and 3–5 particles; fewer here so that points per event match PILArNet-M (docs/model.md §5.7)
MPR_BLOCKS = ((1, 2), (0, 1))
MPR_MARGIN = -20.0  # negative: start box enlarged by 20 cm
KE_MIN_MEV = 5.0
LED_FRACTION = (0.16, 0.28)  # target raw LED fraction per event (PILArNet-M: 21.9 %, docs/model.md §5.6)
E_FLOOR = 0.01  # MeV, voxels below are dropped (docs/model.md §5.4)

_KIND = {"e-": ("e", -1), "e+": ("e", 1), "mu-": ("mu", -1), "mu+": ("mu", 1), "pi+": ("pi", 1),
         "pi-": ("pi", -1), "pi0": ("pi0", 0), "p": ("p", 1), "gamma": ("gamma", 0)}


def _sample_multi(rnd, groups, n):
    """Particle names: each group's minimum first, then weighted draws with max caps (docs/model.md §5.1)."""
    counts = [g[1] for g in groups]
    out = [(name, g) for g in groups for name in [rnd.choice(g[0]) for _ in range(g[1])]]
    for _ in range(max(0, n - sum(counts))):
        w = [g[3] if counts[i] < g[2] else 0.0 for i, g in enumerate(groups)]
        if sum(w) <= 0:
            break
        i = rnd.choices(range(len(groups)), weights=w)[0]
        counts[i] += 1
        out.append((rnd.choice(groups[i][0]), groups[i]))
    return [(name, 1000.0 * rnd.uniform(*g[4])) for name, g in out]


def sample_primaries(rnd):
    """List of (name, KE MeV, pos cm, dir, t0 ns, interaction id): MPV first (id 0), then rain."""
    prims = []
    lo, hi = MPV_MARGIN, ph.BOX_CM - MPV_MARGIN
    vtx = (rnd.uniform(lo, hi), rnd.uniform(lo, hi), rnd.uniform(lo, hi))
    t0 = rnd.uniform(0.0, 10.0)
    for name, ke in _sample_multi(rnd, MPV_GROUPS, rnd.randint(*MPV_MULTI)):
        prims.append((name, max(ke, KE_MIN_MEV), vtx, ph.isotropic(rnd), t0, 0))
    inter = 1
    lo, hi = MPR_MARGIN, ph.BOX_CM - MPR_MARGIN
    c = ph.BOX_CM / 2
    for block in MPR_BLOCKS:
        for name, ke in _sample_multi(rnd, MPR_GROUPS, rnd.randint(*block)):
            pos = (rnd.uniform(lo, hi), rnd.uniform(lo, hi), rnd.uniform(lo, hi))
            d = ph.isotropic(rnd)  # "DirectInward": each component toward the farther wall
            d = tuple(abs(d[a]) if pos[a] < c else -abs(d[a]) for a in range(3))
            prims.append((name, max(ke, KE_MIN_MEV), pos, d, rnd.uniform(0.0, 2000.0), inter))
            inter += 1
    return prims


def _boost_pi0(rnd, T, d):
    """π0 → γγ: isotropic in the rest frame, boosted along d. Returns [(E, dir), (E, dir)]."""
    m = ph.MPI0
    E = T + m
    p = math.sqrt(max(E * E - m * m, 0.0))
    b = p / E
    g = E / m
    out = []
    cs = 2 * rnd.random() - 1
    phi = 2 * math.pi * rnd.random()
    for sgn in (1, -1):
        c = sgn * cs
        El = g * (m / 2) * (1 + b * c)
        cl = (c + b) / (1 + b * c)
        out.append((El, ph.rotate(d, cl, phi + (0 if sgn > 0 else math.pi))))
    return out


def _nuclear_gammas(rnd, cascade, pos, t, e_lo=2.0, e_hi=8.0):
    """De-excitation / capture γs (docs/model.md §5.3): LE blips around pos."""
    n = rnd.randint(1, 3)
    etot = rnd.uniform(e_lo, e_hi)
    for _ in range(n):
        cascade.add_photon(etot / n, pos, ph.isotropic(rnd), t, 0)


def simulate_event(rng, rnd):
    """Transport all particles of one event. Returns (registry, cascade, heavy segment dict)."""
    reg = Registry()
    cascade = Cascade(rng, rnd, reg.shower_fragment)
    seg = {"p0": [], "p1": [], "dE": [], "time": [], "frag": []}
    queue = []  # (kind, charge, T, pos, dir, t, inter, role, parent)
    for name, ke, pos, d, t0, inter in sample_primaries(rnd):
        kind, q = _KIND[name]
        queue.append((kind, q, ke, pos, d, t0, inter, "primary", -1))
    n_done = 0
    while queue and n_done < 200:
        kind, q, T, pos, d, t, inter, role, parent = queue.pop(0)
        n_done += 1
        if T <= 0.05:
            continue
        if kind == "pi0":
            for Eg, dg in _boost_pi0(rnd, T, d):
                queue.append(("gamma", 0, Eg, pos, dg, t, inter, "primary", parent))
            continue
        if kind in ("e", "gamma"):
            motif = {"primary": "shower_root", "michel": "michel", "delta": "delta"}.get(role, "shower_root")
            f = reg.new(motif, kind, T, pos, d, inter, parent=parent)
            (cascade.add_electron if kind == "e" else cascade.add_photon)(T, pos, d, t, f)
            continue
        f = reg.new("nuclear" if role == "nuclear" else "track", kind, T, pos, d, inter, parent=parent)
        tr = heavy_track(rng, kind, T, pos, d, t)
        if tr is None:
            continue
        for k in ("p0", "p1", "dE", "time"):
            seg[k].append(tr[k])
        seg["frag"].append(np.full(len(tr["dE"]), f, np.int64))
        for dpos, dd, Td, td in tr["deltas"]:
            queue.append(("e", -1, Td, dpos, dd, td, inter, "delta", f))
        end, t_end = tr["end_pos"], tr["end_time"]
        if tr["stopped"]:
            if kind == "mu":
                if q < 0 and rnd.random() < ph.MU_MINUS_CAPTURE:
                    _nuclear_gammas(rnd, cascade, end, t_end + rnd.expovariate(1 / ph.TAU_MU_AR_NS), 1.0, 6.0)
                else:
                    Ee = float(ph.michel_energy(rnd.random()))
                    queue.append(("e", q, max(Ee - ph.ME, 0.06), end, ph.isotropic(rnd),
                                  t_end + rnd.expovariate(1 / ph.TAU_MU_NS), inter, "michel", f))
            elif kind == "pi":
                if q > 0:  # π+ → μ+ ν at rest, T_μ = 4.12 MeV (docs/model.md §5.2)
                    queue.append(("mu", 1, 4.12, end, ph.isotropic(rnd), t_end + rnd.expovariate(1 / 26.0), inter, "track", f))
                else:  # π− capture star
                    for _ in range(rnd.randint(0, 2)):
                        queue.append(("p", 1, rnd.uniform(5.0, 60.0), end, ph.isotropic(rnd), t_end, inter, "nuclear", f))
                    _nuclear_gammas(rnd, cascade, end, t_end)
        elif tr["interacted"]:
            Tn = tr["end_T"]
            r = rnd.random()
            if r < 0.45:  # elastic-like kink: same particle, new instance (docs/model.md §5.2)
                cos_t = rnd.uniform(math.cos(math.radians(60)), math.cos(math.radians(8)))
                dn = ph.rotate(tr["end_dir"], cos_t, 2 * math.pi * rnd.random())
                queue.append((kind, q, Tn * rnd.uniform(0.5, 0.95), end, dn, t_end, inter, "track", f))
                if rnd.random() < 0.3:
                    queue.append(("p", 1, rnd.uniform(10.0, 60.0), end, ph.isotropic(rnd), t_end, inter, "nuclear", f))
            elif r < 0.85 or kind == "p":  # absorption: a few protons + blips
                budget = Tn
                for _ in range(rnd.randint(0, 3)):
                    Tp = min(rnd.uniform(10.0, 200.0), budget)
                    budget -= Tp
                    if Tp > 5:
                        queue.append(("p", 1, Tp, end, ph.isotropic(rnd), t_end, inter, "nuclear", f))
                _nuclear_gammas(rnd, cascade, end, t_end)
            else:  # charge exchange π± → π0 (→ γγ)
                queue.append(("pi0", 0, Tn * rnd.uniform(0.5, 0.9), end, tr["end_dir"], t_end, inter, "primary", f))
    cascade.run()
    return reg, cascade, seg


def generate_event(seed: int, index: int, min_raw_points: int = MIN_RAW_POINTS, max_tries: int = 20) -> Event:
    """Event ``index`` of stream ``seed`` (deterministic; independent of other events)."""
    rng = np.random.default_rng([int(seed), int(index)])
    rnd = random.Random(int(rng.integers(2**62)))
    for _ in range(max_tries):
        reg, cascade, seg = simulate_event(rng, rnd)
        led_frac = rnd.uniform(*LED_FRACTION)
        ev = assemble(rng, reg, cascade, seg, led_frac, E_FLOOR)
        if len(ev) >= min_raw_points:
            break
    ev.source = ("sim", int(seed), int(index))
    return ev


def _worker(args):
    seed, indices, kwargs = args
    return [generate_event(seed, i, **kwargs) for i in indices]


def generate_events(n: int, seed: int, start_index: int = 0, workers: int = 1, progress: bool = False,
                    pool=None, **kwargs) -> list[Event]:
    """Events start_index .. start_index+n−1 of stream ``seed``.

    ``workers`` > 1 uses a pool of spawn processes (or pass an open ``pool`` to reuse one); the result is
    identical whatever ``workers``, since each event is seeded from (seed, index) only. As with any
    spawn pool, a calling script must guard its entry point with ``if __name__ == "__main__":``.
    """
    idx = list(range(start_index, start_index + n))
    if (workers <= 1 and pool is None) or n < 2:
        it = idx
        if progress:
            from tqdm import tqdm

            it = tqdm(idx, desc="simulate", unit="ev")
        return [generate_event(seed, i, **kwargs) for i in it]
    nw = workers if pool is None else max(workers, 2)
    chunk = max(1, min(25, n // (nw * 4) or 1))
    jobs = [(seed, idx[i : i + chunk], kwargs) for i in range(0, n, chunk)]
    out: list[Event] = []
    own = pool is None
    if own:
        pool = make_pool(workers)
    try:
        it = pool.imap(_worker, jobs)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(jobs), desc="simulate", unit="chunk")
        for evs in it:
            out.extend(evs)
    finally:
        if own:
            pool.close()
            pool.join()
    return out


def make_pool(workers: int):
    """A spawn-context process pool (safe with threads/torch in the parent)."""
    import multiprocessing as mp

    return mp.get_context("spawn").Pool(workers)
