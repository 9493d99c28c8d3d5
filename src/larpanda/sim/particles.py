"""Transport of charged particles as arrays of straight steps (docs/model.md §5.2).

* ``build_paths``: positions of many tracks at once from step lengths and Highland angles
  (multiple scattering as a random walk of the direction vector, fully vectorised).
* ``heavy_track``: one μ/π/p from the CSDA range table: Bragg curve, Landau-like fluctuations,
  delta rays (1/T² spectrum), hadronic interaction point, end-of-range state.
Units: cm, MeV, ns.
"""

from __future__ import annotations

import math

import numpy as np

from . import physics as ph

STEP_CM = 0.1  # 1 mm steps, 0.2 mm in the last cm of range
FINE_STEP_CM = 0.02
DELTA_TCUT = 3.0  # MeV: knock-on electrons above this are explicit (≈ the 3-voxel DeltaSize); softer ones stay in the continuous loss
BOX_MARGIN = 2.0  # cm beyond the grid where transport stops


def box_exit_length(pos, d, lo=-BOX_MARGIN, hi=ph.BOX_CM + BOX_MARGIN):
    """Distance along the ray pos + t·d (t ≥ 0) at which it leaves the box, or −1 if it never enters."""
    t_in, t_out = 0.0, math.inf
    for a in range(3):
        if abs(d[a]) < 1e-12:
            if pos[a] < lo or pos[a] > hi:
                return -1.0
            continue
        t1, t2 = (lo - pos[a]) / d[a], (hi - pos[a]) / d[a]
        if t1 > t2:
            t1, t2 = t2, t1
        t_in, t_out = max(t_in, t1), min(t_out, t2)
    return t_out if t_out > t_in else -1.0


def build_paths(rng, starts, dirs, ds, theta0, tid):
    """Random-walk paths for several tracks.

    Args:
        starts, dirs: (T, 3) start positions (cm) and unit directions.
        ds: (S,) step lengths (cm); theta0: (S,) Highland RMS angle of each step (rad);
        tid: (S,) track index of each step, non-decreasing (steps of a track are contiguous).
    Returns:
        p0, p1: (S, 3) step start/end points; u: (S, 3) unit direction of each step.

    The direction vector v receives an isotropic Gaussian kick of σ = θ0·E|v| per step, so the
    projected angle of a step is θ0 (kicks use the expected |v|, E|v|² = Π(1 + 3θ0²)). The first
    step of a track goes along its start direction.
    """
    S = len(ds)
    if S == 0:
        z = np.zeros((0, 3))
        return z, z, z
    first = np.empty(S, bool)
    first[0] = True
    first[1:] = tid[1:] != tid[:-1]
    start_idx = np.flatnonzero(first)
    seg_start = np.repeat(start_idx, np.diff(np.append(start_idx, S)))
    lg = np.log1p(3.0 * theta0**2)
    clg = np.cumsum(lg)
    excl = clg - lg - (clg - lg)[seg_start]
    scale = np.exp(0.5 * np.minimum(excl, 600.0))
    kick = rng.standard_normal((S, 3)) * (theta0 * scale)[:, None]
    kick[first] = 0.0  # first step straight
    ck = np.cumsum(kick, axis=0)
    v = dirs[tid] + ck - ck[seg_start] + kick[seg_start]
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    step = u * ds[:, None]
    cs = np.cumsum(step, axis=0)
    p1 = starts[tid] + cs - cs[seg_start] + step[seg_start]
    p0 = p1 - step
    return p0, p1, u


def _step_edges(L, stopping):
    if stopping and L > 1.0:
        a = np.arange(0.0, L - 1.0, STEP_CM)
        b = np.arange(a[-1] + STEP_CM if a.size else 0.0, L, FINE_STEP_CM)
        edges = np.concatenate([a, b, [L]])
    elif stopping:
        edges = np.concatenate([np.arange(0.0, L, FINE_STEP_CM), [L]])
    else:
        edges = np.concatenate([np.arange(0.0, L, STEP_CM), [L]])
    edges = edges[np.r_[True, np.diff(edges) > 1e-9]]
    return edges


HADRONIC_LAMBDA = {"pi": 70.0, "p": 80.0}  # cm, docs/model.md §5.2
HADRONIC_TMIN = {"pi": 30.0, "p": 50.0}  # MeV, below this no in-flight interaction


def heavy_track(rng, kind, T0, pos, d, t0):
    """Transport one muon, pion or proton. Returns None if it never enters the box, else a dict:

    p0, p1 (S,3), dE (S,), time (S,) ns at step middle, ds (S,), end_pos, end_dir, end_T,
    end_time, stopped (bool: ranged out inside the box), interacted (hadronic interaction in flight),
    deltas: list of (pos, dir, T, time).
    """
    mass = ph.MASS[kind]
    table = ph.range_table(mass)
    R0 = float(table.range(T0))
    L_exit = box_exit_length(pos, d)
    if L_exit <= 0:
        return None
    L, interacted = R0, False
    if kind in HADRONIC_LAMBDA:
        d_int = rng.exponential(HADRONIC_LAMBDA[kind])
        r_min = float(table.range(HADRONIC_TMIN[kind]))
        if d_int < R0 - r_min:
            L, interacted = d_int, True
    truncated = L > L_exit + 20.0
    if truncated:  # leaves the box long before the end: stop at exit (+ slack for scattering)
        L, interacted = L_exit + 20.0, False
    stopping = not truncated and not interacted
    edges = _step_edges(L, stopping)
    T_e = table.energy(R0 - edges)
    if stopping:
        T_e[-1] = 0.0
    dE = -np.diff(T_e)
    ds = np.diff(edges)
    T_mid = 0.5 * (T_e[1:] + T_e[:-1])
    beta = ph.beta_of(T_mid, mass)
    p = ph.momentum(T_mid, mass)
    theta0 = ph.highland_theta0(p, beta, ds)
    # Landau-like fluctuations around the mean loss
    xi = ph.landau_xi(beta, ds)
    dE = np.maximum(dE + xi * ph.moyal_fluctuation(rng, len(dE)), 0.2 * dE)
    # delta rays: explicit above DELTA_TCUT; the continuous loss is the restricted
    # one, Bethe minus the mean energy carried by those deltas, K/2 Z/A ρ/β² [ln(hi/Tc) − β²(1 − Tc/hi)]
    tmax = ph.tmax_delta(T_mid, mass)
    hi = np.minimum(tmax, T_mid)
    above = hi > DELTA_TCUT
    b2 = beta**2
    carried = np.where(above, ph.DELTA_K / b2 * (np.log(np.maximum(hi, DELTA_TCUT) / DELTA_TCUT) - b2 * (1 - DELTA_TCUT / np.maximum(hi, DELTA_TCUT))), 0.0)
    dE = np.maximum(dE - carried * ds, 0.5 * dE)
    nd = rng.poisson(ph.delta_rate(beta, DELTA_TCUT, hi) * ds)
    p0, p1, u = build_paths(rng, np.asarray([pos], float), np.asarray([d], float), ds, theta0, np.zeros(len(ds), np.int64))
    time = t0 + np.cumsum(ds / (beta * ph.C_CM_PER_NS)) - 0.5 * ds / (beta * ph.C_CM_PER_NS)
    # keep the steps from the first to the last one whose midpoint is inside the box
    mid = 0.5 * (p0 + p1)
    ins = ((mid >= 0) & (mid < ph.BOX_CM)).all(axis=1)
    if not ins.any():
        return None
    i0, i1 = np.flatnonzero(ins)[[0, -1]]
    exited = i1 < len(ds) - 1 or not ins[-1]
    deltas = []
    for j in np.flatnonzero(nd[i0 : i1 + 1]) + i0:
        for _ in range(int(nd[j])):
            Td = float(ph.sample_inv_square(rng.random(), DELTA_TCUT, max(hi[j], DELTA_TCUT * 1.0001)))
            pe = math.sqrt(Td * (Td + 2 * ph.ME))
            pm = math.sqrt(tmax[j] * (tmax[j] + 2 * ph.ME))
            cos_t = min(1.0, (Td / pe) * (pm / tmax[j]))
            dd = ph.rotate(tuple(u[j]), cos_t, 2 * math.pi * rng.random())
            f = rng.random()
            deltas.append((tuple(p0[j] + f * (p1[j] - p0[j])), dd, Td, float(time[j])))
    sl = slice(i0, i1 + 1)
    return {
        "p0": p0[sl], "p1": p1[sl], "dE": dE[sl], "time": time[sl], "ds": ds[sl],
        "end_pos": tuple(p1[i1]), "end_dir": tuple(u[i1]), "end_T": float(T_e[i1 + 1]),
        "end_time": float(time[i1]),
        "stopped": stopping and not exited, "interacted": interacted and not exited, "deltas": deltas,
    }
