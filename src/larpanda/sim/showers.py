"""Electromagnetic mini-cascade for e± and γ (docs/model.md §5.3).

Electrons lose 2.1 MeV/cm by ionisation and emit bremsstrahlung photons (k > K_MIN) at the rate
(4/3)·ln(E/K_MIN)/X0 per cm with the complete-screening spectrum; photons fly Exp(λ) between
Compton scatters (Klein–Nishina) and pair conversions; below PHOTO_E they are absorbed. The cascade
runs generation by generation: the scalar bookkeeping is pure Python, and all electron paths of a
generation are built in one vectorised call (multiple scattering included), so the photons of the
next generation start from the true emission points.

The caller supplies ``new_fragment(parent_frag, E, pos, dir) -> frag`` to register every electron
fragment (Compton electron, pair e±) with its ancestry; LE-only cascades pass frag 0 (row 0).
"""

from __future__ import annotations

import math

import numpy as np

from . import physics as ph
from .particles import BOX_MARGIN, STEP_CM, build_paths

K_MIN = 1.0  # MeV, lowest explicit brems photon (softer ones are part of the continuous loss)
PHOTO_E = 0.15  # MeV, photons below this are absorbed locally (photoelectric dominates ≲ 0.1 MeV)
POINT_E = 0.25  # MeV, electrons below this deposit in one point (range < 1.2 mm)
_LO, _HI = -BOX_MARGIN - 20.0, ph.BOX_CM + BOX_MARGIN + 20.0


def _outside(pos):
    return not (_LO < pos[0] < _HI and _LO < pos[1] < _HI and _LO < pos[2] < _HI)


class Cascade:
    """Collects deposits of one event's EM particles.

    Outputs (lists, concatenated by ``arrays``): segments p0/p1/dE/time/frag and point deposits
    pos/E/time/frag.
    """

    def __init__(self, rng, rnd, new_fragment):
        self.rng, self.rnd, self.new_fragment = rng, rnd, new_fragment
        self.electrons = []  # (E, pos, dir, t, frag)
        self.photons = []  # (E, pos, dir, t, frag_parent)
        self.seg = {"p0": [], "p1": [], "dE": [], "time": [], "frag": []}
        self.pts = {"pos": [], "E": [], "time": [], "frag": [], "origin": []}

    def add_electron(self, E, pos, d, t, frag):
        self.electrons.append((E, tuple(pos), tuple(d), t, frag))

    def add_photon(self, E, pos, d, t, frag):
        self.photons.append((E, tuple(pos), tuple(d), t, frag))

    def _point(self, E, pos, t, frag, origin=0):
        """A one-voxel deposit. ``origin``: the fragment whose photon made it (for the merge of LE
        pieces touching their own shower, labels.py), 0 if none."""
        self.pts["origin"].append(origin if origin else frag)
        self.pts["pos"].append(pos)
        self.pts["E"].append(E)
        self.pts["time"].append(t)
        self.pts["frag"].append(frag)

    # -- photons: pure-Python random walk ----------------------------------------------------------
    def _run_photons(self):
        rnd = self.rnd
        photons, self.photons = self.photons, []
        while photons:
            E, pos, d, t, frag = photons.pop()
            while True:
                if E < PHOTO_E:  # photo-absorption: an isolated LE deposit
                    self._point(E, pos, t, 0, frag)
                    break
                mu, pair_frac = ph.attenuation(E)
                dist = rnd.expovariate(mu)
                pos = (pos[0] + dist * d[0], pos[1] + dist * d[1], pos[2] + dist * d[2])
                t += dist / ph.C_CM_PER_NS
                if _outside(pos):
                    break
                if E > 2 * ph.ME and rnd.random() < pair_frac:  # pair production
                    Tk = E - 2 * ph.ME
                    f = rnd.random()
                    for Te in (f * Tk, (1 - f) * Tk):
                        de = ph.rotate(d, math.cos(ph.ME / max(Te + ph.ME, 1e-3)), 2 * math.pi * rnd.random())
                        self._electron(Te, pos, de, t, frag)
                    break
                eps, cos_t = ph.klein_nishina(rnd, E)
                Te = E * (1.0 - eps)
                phi = 2 * math.pi * rnd.random()
                dn = ph.rotate(d, cos_t, phi)
                if Te < POINT_E:  # sub-voxel electron: no direction needed
                    self._point(Te, pos, t, 0, frag)
                else:  # electron momentum = p_γ − p_γ'
                    pe = (E * d[0] - E * eps * dn[0], E * d[1] - E * eps * dn[1], E * d[2] - E * eps * dn[2])
                    n = math.sqrt(pe[0] ** 2 + pe[1] ** 2 + pe[2] ** 2) or 1.0
                    self._electron(Te, pos, (pe[0] / n, pe[1] / n, pe[2] / n), t, frag)
                E, d = E * eps, dn

    def _electron(self, Te, pos, d, t, parent):
        if Te < POINT_E:
            self._point(Te, pos, t, 0, parent)  # sub-voxel electron: LE (docs/model.md §5.5)
            return
        frag = self.new_fragment(parent, Te, pos, d) if parent != 0 else 0
        self.electrons.append((Te, pos, d, t, frag))

    # -- electrons: brems sampling in Python, paths vectorised per generation ----------------------
    def _run_electrons(self):
        rnd = self.rnd
        electrons, self.electrons = self.electrons, []
        starts, dirs, lengths, E0s, frags, t0s = [], [], [], [], [], []
        brem_e, brem_s, brem_k = [], [], []
        for i, (E, pos, d, t, frag) in enumerate(electrons):
            if E < POINT_E:
                self._point(E, pos, t, frag)
                continue
            k_e = len(starts)
            s, En = 0.0, E
            while True:
                rate = (4.0 / 3.0) * math.log(En / K_MIN) / ph.X0 if En > 2 * K_MIN else 0.0
                dist = rnd.expovariate(rate) if rate > 0 else math.inf
                if En - ph.ELECTRON_DEDX * dist <= 0:
                    s += En / ph.ELECTRON_DEDX
                    break
                s += dist
                En -= ph.ELECTRON_DEDX * dist
                k = En * ph.brem_fraction(rnd, K_MIN / En)
                if k >= En - 1e-6:
                    k = En * 0.999
                En -= k
                brem_e.append(k_e)
                brem_s.append(s)
                brem_k.append(k)
            starts.append(pos)
            dirs.append(d)
            lengths.append(s)
            E0s.append(E)
            frags.append(frag)
            t0s.append(t)
        if not starts:
            return
        L = np.asarray(lengths)
        n = np.maximum(np.ceil(L / STEP_CM - 1e-9).astype(np.int64), 1)
        tid = np.repeat(np.arange(len(L)), n)
        first = np.cumsum(n) - n
        k = np.arange(tid.size) - first[tid]
        s0 = k * STEP_CM
        ds = np.minimum(STEP_CM, L[tid] - s0)
        ds = np.maximum(ds, 1e-6)
        # energy at each step middle: E0 − ionisation − brems emitted before
        be, bs, bk = np.asarray(brem_e, np.int64), np.asarray(brem_s), np.asarray(brem_k)
        smid = s0 + 0.5 * ds
        E0 = np.asarray(E0s)
        if be.size:
            key_b = be * 1e5 + bs
            cb = np.r_[0.0, np.cumsum(bk)]
            n_before = np.searchsorted(key_b, tid * 1e5 + smid)
            n_first = np.searchsorted(key_b, tid * 1e5)
            brem_before = cb[n_before] - cb[n_first]
        else:
            brem_before = 0.0
        Emid = np.maximum(E0[tid] - ph.ELECTRON_DEDX * smid - brem_before, 0.05)
        beta = ph.beta_of(Emid, ph.ME)
        theta0 = ph.highland_theta0(ph.momentum(Emid, ph.ME), beta, ds)
        p0, p1, u = build_paths(self.rng, np.asarray(starts, float), np.asarray(dirs, float), ds, theta0, tid)
        dE = ph.ELECTRON_DEDX * ds
        dE = np.maximum(dE + ph.landau_xi(beta, ds) * ph.moyal_fluctuation(self.rng, len(ds)), 0.2 * dE)
        t = np.asarray(t0s)[tid] + smid / ph.C_CM_PER_NS
        fr = np.asarray(frags, np.int64)[tid]
        self.seg["p0"].append(p0)
        self.seg["p1"].append(p1)
        self.seg["dE"].append(dE)
        self.seg["time"].append(t)
        self.seg["frag"].append(fr)
        # brems photons start at their emission point along the built path
        if be.size:
            j = first[be] + np.minimum((bs / STEP_CM).astype(np.int64), n[be] - 1)
            off = bs - (j - first[be]) * STEP_CM
            bp = p0[j] + u[j] * off[:, None]
            for q in range(be.size):
                e = int(be[q])
                self.photons.append((float(bk[q]), tuple(bp[q]), tuple(u[j[q]]), t0s[e] + bs[q] / ph.C_CM_PER_NS, frags[e]))

    def run(self, max_generations=60):
        for _ in range(max_generations):
            if not self.electrons and not self.photons:
                break
            self._run_photons()
            self._run_electrons()

    def arrays(self):
        """Concatenated deposits: (segments dict, points dict) of numpy arrays."""
        if self.seg["p0"]:
            seg = {k: np.concatenate(v) for k, v in self.seg.items()}
        else:
            seg = {"p0": np.zeros((0, 3)), "p1": np.zeros((0, 3)), "dE": np.zeros(0), "time": np.zeros(0), "frag": np.zeros(0, np.int64)}
        pts = {
            "pos": np.asarray(self.pts["pos"], float).reshape(-1, 3),
            "E": np.asarray(self.pts["E"], float),
            "time": np.asarray(self.pts["time"], float),
            "frag": np.asarray(self.pts["frag"], np.int64),
            "origin": np.asarray(self.pts["origin"], np.int64),
        }
        return seg, pts
