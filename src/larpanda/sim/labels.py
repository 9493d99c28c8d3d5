"""Fragment bookkeeping and Supera-like labelling of the voxelised deposits (docs/model.md §5.5).

Fragment roles and their motif (semantic) rule:
  track        primary/secondary μ, π, p (and hadronic kinks)          → track (1)
  nuclear      protons from captures / absorptions                       → track if > 10 voxels, else LE
  shower_root  primary e±/γ                                              → shower (0)
  shower       Compton/pair electrons inside a cascade                   → shower if > 10 voxels, else LE
  michel       decay electron of a μ                                     → Michel (2)
  delta        knock-on electron                                         → delta (3) if ≥ 3 voxels, else merged into its parent
  le           row 0 (fragment 0): photo-absorption, tiny electrons, nuclear γ, background blips
Overlaps: one point per voxel, energy summed, label from priority track > shower > Michel > delta > LE.
"""

from __future__ import annotations

import math

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV
from ..data.event import Event
from . import physics as ph
from .voxelize import GRID, deposit_segments, inside, key_to_ijk, voxel_key

MOTIF = {"shower": 0, "track": 1, "michel": 2, "delta": 3, "le": 4}
PRIORITY = np.array([1, 0, 2, 3, 4])  # rank by motif id: track first (docs/model.md §5.5)
COMPTON_SIZE = 10  # voxels (Supera ComptonSize)
DELTA_SIZE = 3  # voxels (Supera DeltaSize)
NUCLEAR_SIZE = 10
BLIP_BELOW_CUT = 0.95  # fraction of background blips below 0.13 MeV


class Registry:
    """Every particle fragment that may deposit energy; index 0 is the LED bucket (row 0)."""

    def __init__(self):
        self.role, self.pid, self.mass, self.p, self.vtx = ["le"], [-1], [-1.0], [-1.0], [(-1.0, -1.0, -1.0)]
        self.inter, self.group, self.parent = [-1], [0], [-1]

    def __len__(self):
        return len(self.role)

    def _add(self, role, pid, mass, p_gev, pos, inter, group, parent):
        i = len(self.role)
        self.role.append(role)
        self.pid.append(pid)
        self.mass.append(mass)
        self.p.append(p_gev)
        self.vtx.append(pos)
        self.inter.append(inter)
        self.group.append(i if group is None else group)
        self.parent.append(parent)
        return i

    def new(self, role, kind, T, pos, d, inter, parent=-1):
        """A particle starting its own group (tracks, shower roots, Michel, delta)."""
        mass = ph.MASS[kind]
        return self._add(role, ph.PID[kind], mass, math.sqrt(T * (T + 2 * mass)) / 1000.0, pos, inter, None, parent)

    def shower_fragment(self, parent, T, pos, d):
        """A cascade electron: joins the group of its parent (Supera SetGroupID, docs/model.md §5.5)."""
        if parent == 0:
            return 0
        g = self.group[parent]
        return self._add("shower", self.pid[g], ph.ME, math.sqrt(T * (T + 2 * ph.ME)) / 1000.0, pos, self.inter[parent], g, parent)


def _final_labels(reg, nvox):
    """Per fragment: (target fragment after merges, motif); fragment 0 = LE."""
    n = len(reg)
    target = np.arange(n)
    motif = np.full(n, 4)
    for f in range(1, n):
        r, nv = reg.role[f], nvox[f]
        if r == "track":
            motif[f] = 1
        elif r == "nuclear":
            motif[f] = 1 if nv > NUCLEAR_SIZE else 4
        elif r == "shower_root":
            motif[f] = 0
        elif r == "shower":
            motif[f] = 0 if nv > COMPTON_SIZE else 4
        elif r == "michel":
            motif[f] = 2
    for f in range(1, n):  # deltas last: they may merge into their (already labelled) parent
        if reg.role[f] == "delta":
            if nvox[f] >= DELTA_SIZE:
                motif[f] = 3
            else:
                par = reg.parent[f]
                if par > 0 and motif[par] != 4:
                    target[f], motif[f] = par, motif[par]
    target[motif == 4] = 0
    motif[0] = 4
    return target, motif


def _led_blips(rng, n, anchor_ijk, taken):
    """``n`` background LE voxels near existing activity (docs/model.md §5.6): returns (ijk, E)."""
    if n <= 0 or len(anchor_ijk) == 0:
        return np.zeros((0, 3), np.int64), np.zeros(0)
    m = int(n * 1.3) + 8
    a = anchor_ijk[rng.integers(0, len(anchor_ijk), m)].astype(np.float64)
    dvec = rng.standard_normal((m, 3))
    dvec /= np.linalg.norm(dvec, axis=1, keepdims=True)
    r = rng.exponential(6.0, m) / ph.VOXEL_CM
    ijk = np.floor(a + 0.5 + dvec * r[:, None]).astype(np.int64)
    ok = inside(ijk)
    ijk = ijk[ok]
    key = voxel_key(ijk)
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    ijk, key = ijk[first], key[first]
    ijk = ijk[~np.isin(key, taken)][:n]
    k = len(ijk)
    # log-uniform from 0.01 MeV, 95 % below 0.13 MeV, tail with post-cut median ≈ 0.29 MeV (docs/model.md §5.6).
    # Physics LE (small Compton fragments, sub-voxel electrons) already puts many LED voxels above the cut,
    # so the background is kept mostly sub-threshold to approach PILArNet-M's 85–90 % of raw LED voxels
    # below the cut.
    low = rng.random(k) < BLIP_BELOW_CUT
    e = np.where(low, 10 ** rng.uniform(-2.0, np.log10(ENERGY_THRESHOLD_MEV), k),
                 ENERGY_THRESHOLD_MEV * np.exp(rng.exponential(1.16, k)))
    return ijk, np.minimum(e, 5.0)


_NEIGH = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)])


def merge_touching(reg, f_fv, src_fv, is_pt, k_fv):
    """LE pieces of a shower group (small Compton/brems fragments, sub-voxel electrons) that touch a
    labelled voxel of their own group (26-neighbourhood) join that fragment, as Supera's
    shower-touching-LEScatter merge does. Whole fragments move together; points move one by one.

    Args: per (fragment, voxel) entry: current fragment (0 = LE), source fragment, point flag, voxel key.
    Returns the updated fragment array.
    """
    grp = np.asarray(reg.group)
    cand = (f_fv == 0) & (src_fv > 0)
    if not cand.any():
        return f_fv
    lab = f_fv > 0
    gk = grp[f_fv[lab]] * (GRID**3) + k_fv[lab]
    order = np.argsort(gk)
    gk, gf = gk[order], f_fv[lab][order]
    ci = np.flatnonzero(cand)
    ijk = key_to_ijk(k_fv[ci])
    g = grp[src_fv[ci]]
    nb = ijk[:, None, :] + _NEIGH[None]  # (C, 26, 3)
    valid = ((nb >= 0) & (nb < GRID)).all(axis=2)
    nkey = g[:, None] * (GRID**3) + voxel_key(np.clip(nb, 0, GRID - 1).reshape(-1, 3)).reshape(nb.shape[:2])
    pos = np.clip(np.searchsorted(gk, nkey), 0, max(len(gk) - 1, 0))
    hit = valid & (len(gk) > 0) & (gk[pos] == nkey) if len(gk) else np.zeros(nkey.shape, bool)
    touched = hit.any(axis=1)
    match = np.where(touched, gf[pos[np.arange(len(ci)), np.argmax(hit, axis=1)]] if len(gk) else 0, 0)
    out = f_fv.copy()
    pts = is_pt[ci]
    sel = touched & pts
    out[ci[sel]] = match[sel]
    # fragments: if any voxel touches, all voxels of that source fragment go to the first match
    fr = ~pts & touched
    if fr.any():
        srcs, first = np.unique(src_fv[ci[fr]], return_index=True)
        dest = dict(zip(srcs.tolist(), match[fr][first].tolist()))
        whole = ~pts & np.isin(src_fv[ci], srcs)
        out[ci[whole]] = [dest[s] for s in src_fv[ci[whole]].tolist()]
    return out


def assemble(rng, reg, cascade, heavy, led_fraction, e_floor=0.01):
    """Voxelise all deposits, label them, add LED background and build the v2 Event."""
    cseg, cpts = cascade.arrays()
    cat = lambda k, c: np.concatenate(heavy[k] + [c]) if heavy[k] else c  # noqa: E731
    p0, p1 = cat("p0", cseg["p0"]), cat("p1", cseg["p1"])
    dE, tm, fr = cat("dE", cseg["dE"]), cat("time", cseg["time"]), cat("frag", cseg["frag"])
    ds = np.linalg.norm(p1 - p0, axis=1)
    dedx = dE / np.maximum(ds, 1e-4)
    sidx, ijk, e, chord = deposit_segments(p0, p1, dE)
    ne = e / ph.W_ION * ph.recombination(dedx[sidx])
    # point deposits (sub-voxel electrons, photo-absorption)
    pijk = np.floor(cpts["pos"] / ph.VOXEL_CM).astype(np.int64)
    pe = cpts["E"]
    ijk = np.concatenate([ijk, pijk])
    e = np.concatenate([e, pe])
    dx = np.concatenate([chord, pe / ph.ELECTRON_DEDX]) * 10.0  # mm
    ne = np.concatenate([ne, pe / ph.W_ION * ph.recombination(10.0)])
    t = np.concatenate([tm[sidx], cpts["time"]])
    f = np.concatenate([fr[sidx], cpts["frag"]])
    origin = np.concatenate([fr[sidx], cpts.get("origin", cpts["frag"])])
    ok = inside(ijk) & (e > 0)
    ijk, e, dx, ne, t, f, origin = ijk[ok], e[ok], dx[ok], ne[ok], t[ok], f[ok], origin[ok]
    key = voxel_key(ijk)
    # aggregate per (fragment, origin, voxel); LE points keep the fragment whose photon made them
    code = origin * 2 + ((f == 0) & (origin > 0))
    fk = code * (GRID**3) + key
    ufk, inv = np.unique(fk, return_inverse=True)
    E_fv = np.bincount(inv, e)
    dx_fv = np.bincount(inv, dx)
    ne_fv = np.bincount(inv, ne)
    t_fv = np.full(len(ufk), np.inf)
    np.minimum.at(t_fv, inv, t)
    c_fv, k_fv = ufk // (GRID**3), ufk % (GRID**3)
    src_fv = c_fv // 2
    is_pt = (c_fv % 2) == 1
    f_fv = np.where(is_pt, 0, src_fv)
    # fragment sizes count voxels above Supera's 0.05 MeV deposit threshold (docs/model.md §5.5)
    nvox = np.bincount(f_fv[E_fv >= 0.05], minlength=len(reg))
    target, motif = _final_labels(reg, nvox)
    f_fv = target[f_fv]
    f_fv = merge_touching(reg, f_fv, src_fv, is_pt, k_fv)
    m_fv = motif[f_fv]
    # one point per voxel: the highest-priority label wins, energies are summed
    order = np.lexsort((-E_fv, PRIORITY[m_fv], k_fv))
    k_s = k_fv[order]
    ukey, start, inv2 = np.unique(k_s, return_index=True, return_inverse=True)
    win = order[start]
    vE = np.bincount(inv2, E_fv[order])
    vdx = np.bincount(inv2, dx_fv[order])
    vne = np.bincount(inv2, ne_fv[order])
    vt = np.full(len(ukey), np.inf)
    np.minimum.at(vt, inv2, t_fv[order])
    vf = f_fv[win]
    # LED background blips to reach the target LED fraction
    n_led = int((vf == 0).sum())
    n_all = len(ukey)
    n_add = int(round((led_fraction * (n_all - n_led) - (1 - led_fraction) * n_led) / max(1 - led_fraction, 1e-3)))
    bijk, bE = _led_blips(rng, n_add, key_to_ijk(ukey[vf != 0]), ukey)
    if len(bE):
        bkey = voxel_key(bijk)
        ukey = np.concatenate([ukey, bkey])
        vE = np.concatenate([vE, bE])
        vdx = np.concatenate([vdx, rng.uniform(0.05, 1.0, len(bE))])
        vne = np.concatenate([vne, bE / ph.W_ION * ph.recombination(10.0)])
        vt = np.concatenate([vt, rng.uniform(0.0, 2000.0, len(bE))])
        vf = np.concatenate([vf, np.zeros(len(bE), np.int64)])
    keep = vE >= e_floor
    ukey, vE, vdx, vne, vt, vf = ukey[keep], vE[keep], vdx[keep], vne[keep], vt[keep], vf[keep]
    return build_event(reg, motif, ukey, vE, vdx, vne, vt, vf)


def build_event(reg, motif, ukey, vE, vdx, vne, vt, vf):
    """Rows: 0 = LED, then one per surviving fragment in creation order; points contiguous per row."""
    frags = np.unique(vf[vf > 0])
    rows = np.concatenate([[0], frags]).astype(np.int64)
    row_of = np.full(len(reg), -1, np.int64)
    row_of[rows] = np.arange(len(rows))
    vrow = row_of[vf]
    order = np.lexsort((ukey, vrow))
    ijk = key_to_ijk(ukey[order])
    E = vE[order].astype(np.float32)
    point = np.zeros((len(order), 8), np.float32)
    point[:, :3] = ijk
    point[:, 3] = E
    point[:, 4] = E
    point[:, 5] = vt[order]
    point[:, 6] = vne[order]
    point[:, 7] = vdx[order]
    sizes = np.bincount(vrow, minlength=len(rows))
    cluster = np.zeros((len(rows), 6), np.int64)
    extra = np.full((len(rows), 5), -1.0, np.float32)
    cluster[0] = [sizes[0], -1, -1, -1, 4, -1]
    cid = rows.copy()
    grp = np.array([reg.group[r] for r in rows])
    # the group id must be the cluster id of an existing row: if the group root left no row
    # (e.g. a photon), its largest fragment takes the root's id (as in real PILArNet-M rows)
    present = set(rows.tolist())
    for g in np.unique(grp[1:]):
        if g not in present:
            members = np.flatnonzero(grp == g)
            members = members[members > 0]
            big = members[np.argmax(sizes[members])]
            cid[big] = g
    for i in range(1, len(rows)):
        r = rows[i]
        g = reg.group[r]
        cluster[i] = [sizes[i], cid[i], g, reg.inter[r], motif[r], reg.pid[g]]
        extra[i] = [reg.mass[r], reg.p[r], *reg.vtx[r]]
    return Event(point=point, cluster=cluster, cluster_extra=extra)
