"""Liquid-argon physics for the event simulator: constants, stopping power, ranges, scattering,
recombination and the small samplers (Michel spectrum, Klein–Nishina, bremsstrahlung).

All lengths in cm, energies in MeV, momenta in MeV/c unless stated; values: docs/model.md §5.2;
sources: docs/model.md §6.3.
"""

from __future__ import annotations

import math

import numpy as np

# --- liquid argon --------------------------------------------------------------------------------
RHO = 1.396  # g/cm³ (PDG)
Z_OVER_A = 0.45059
I_EXC = 188.0e-6  # MeV, mean excitation energy
K_BETHE = 0.307075  # MeV cm²/mol
ME = 0.51099895  # MeV
MMU = 105.6583755
MPI = 139.57039
MP = 938.272088
MPI0 = 134.9768
X0 = 14.0  # cm, radiation length
W_ION = 23.6e-6  # MeV per electron-ion pair
E_FIELD = 0.5  # kV/cm
BOX_ALPHA, BOX_BETA, BOX_RHO = 0.93, 0.212, 1.383  # modified Box (ArgoNeuT), docs/model.md §5.4
ELECTRON_DEDX = 2.1  # MeV/cm, collision loss of e± (≈ MIP), docs/model.md §5.3
C_CM_PER_NS = 29.9792458
# Sternheimer density-effect parameters for LAr (PUMAS liquid-argon table)
_ST_A, _ST_K, _ST_X0, _ST_X1, _ST_C = 0.1956, 3.0, 0.2, 3.0, 5.2146

MASS = {"gamma": 0.0, "e": ME, "mu": MMU, "pi": MPI, "p": MP}
PID = {"gamma": 0, "e": 1, "mu": 2, "pi": 3, "p": 4}

VOXEL_CM = 0.3
GRID = 768
BOX_CM = VOXEL_CM * GRID  # 230.4 cm


def density_effect(betagamma):
    """Sternheimer δ(βγ) for LAr."""
    x = np.log10(np.maximum(betagamma, 1e-12))
    d = 2 * math.log(10) * x - _ST_C
    mid = (x >= _ST_X0) & (x < _ST_X1)
    d = np.where(mid, d + _ST_A * np.clip(_ST_X1 - x, 0, None) ** _ST_K, d)
    return np.where(x < _ST_X0, 0.0, d)


def bethe_dedx(T, mass):
    """Mean stopping power −dE/dx (MeV/cm) of a singly charged particle of kinetic energy T (MeV)."""
    T = np.asarray(T, dtype=np.float64)
    gamma = 1.0 + T / mass
    b2 = 1.0 - 1.0 / gamma**2
    bg2 = b2 * gamma**2
    tmax = 2 * ME * bg2 / (1 + 2 * gamma * ME / mass + (ME / mass) ** 2)
    log_term = 0.5 * np.log(2 * ME * bg2 * tmax / I_EXC**2)
    val = K_BETHE * Z_OVER_A / b2 * (log_term - b2 - density_effect(np.sqrt(bg2)) / 2)
    return val * RHO


class RangeTable:
    """CSDA range R(T) and its inverse T(R) for a heavy charged particle, by integrating Bethe.

    Below ``t_low`` (where Bethe is unreliable) the range follows the power law R ∝ T^1.72, the
    integral of the Bragg-curve law dE/dx ∝ R^−0.42.
    """

    def __init__(self, mass: float):
        self.mass = mass
        t_low = 1.0 * mass / MMU  # ~1 MeV for μ, ~9 MeV for p (scales with βγ)
        T = np.geomspace(t_low, 2.0e5, 3000)
        S = bethe_dedx(T, mass)
        inv = 1.0 / S
        R = np.concatenate([[0.0], np.cumsum(0.5 * (inv[1:] + inv[:-1]) * np.diff(T))])
        r_low = t_low / S[0] / 1.72  # ∫0^t_low dT/S with S ∝ T^(1−1.72)
        self.T = np.concatenate([np.geomspace(1e-4, t_low, 200)[:-1], T])
        lowR = r_low * (self.T[:199] / t_low) ** 1.72
        self.R = np.concatenate([lowR, R + r_low])
        self.logT, self.logR = np.log(self.T), np.log(self.R)

    def range(self, T):
        """CSDA range (cm) at kinetic energy T (MeV)."""
        T = np.maximum(np.asarray(T, dtype=np.float64), 1e-4)
        return np.exp(np.interp(np.log(T), self.logT, self.logR))

    def energy(self, R):
        """Kinetic energy (MeV) that has residual range R (cm); 0 at R <= 0."""
        R = np.asarray(R, dtype=np.float64)
        out = np.exp(np.interp(np.log(np.maximum(R, 1e-12)), self.logR, self.logT))
        return np.where(R <= self.R[0], 0.0, out)


_TABLES: dict[float, RangeTable] = {}


def range_table(mass: float) -> RangeTable:
    if mass not in _TABLES:
        _TABLES[mass] = RangeTable(mass)
    return _TABLES[mass]


def momentum(T, mass):
    """|p| (MeV/c) from kinetic energy."""
    return np.sqrt(np.maximum(T, 0) * (np.maximum(T, 0) + 2 * mass))


def beta_of(T, mass):
    if mass == 0:
        return np.ones_like(np.asarray(T, dtype=np.float64))
    gamma = 1.0 + np.asarray(T, dtype=np.float64) / mass
    return np.sqrt(np.maximum(1.0 - 1.0 / gamma**2, 1e-12))


def highland_theta0(p, beta, x):
    """Plane-projected RMS scattering angle (rad) after x cm (PDG Highland)."""
    x = np.maximum(x, 1e-6)
    t = x / X0
    corr = np.maximum(1.0 + 0.038 * np.log(t / np.maximum(beta, 1e-3) ** 2), 0.3)
    return 13.6 / np.maximum(beta * p, 1e-3) * np.sqrt(t) * corr


def recombination(dedx):
    """Modified Box recombination survival fraction R(dE/dx [MeV/cm]) (docs/model.md §5.4)."""
    xi = BOX_BETA * np.maximum(dedx, 1e-3) / (BOX_RHO * E_FIELD)
    return np.log(BOX_ALPHA + xi) / xi


def landau_xi(beta, dx):
    """Landau width ξ (MeV) over dx cm: (K/2)(Z/A)ρ dx/β²."""
    return 0.5 * K_BETHE * Z_OVER_A * RHO * dx / np.maximum(beta, 1e-3) ** 2


def moyal_fluctuation(rng, n, cap=6.0):
    """Standard Moyal variates (X = −ln Z², Z ~ N(0,1)) capped at ``cap`` and centred to mean 0.

    The cap stands for the delta-ray cut: larger losses are simulated as explicit delta rays.
    """
    z = rng.standard_normal(n)
    x = np.minimum(-np.log(np.maximum(z * z, 1e-300)), cap)
    return x - 1.19  # mean of the capped distribution (1.19 at cap 6; 1.27 uncapped)


# --- delta rays -----------------------------------------------------------------------------------
DELTA_K = 0.5 * K_BETHE * Z_OVER_A * RHO  # 0.0966 MeV/cm


def tmax_delta(T, mass):
    gamma = 1.0 + T / mass
    bg2 = gamma**2 - 1
    return 2 * ME * bg2 / (1 + 2 * gamma * ME / mass + (ME / mass) ** 2)


def delta_rate(beta, t_cut, t_max):
    """Mean number of knock-on electrons with T > t_cut per cm."""
    return np.where(t_max > t_cut, DELTA_K / beta**2 * (1.0 / t_cut - 1.0 / np.maximum(t_max, t_cut)), 0.0)


def sample_inv_square(u, t_lo, t_hi):
    """Inverse-CDF sample of dN/dT ∝ 1/T² on [t_lo, t_hi]."""
    return 1.0 / (1.0 / t_lo - u * (1.0 / t_lo - 1.0 / t_hi))


# --- Michel spectrum ------------------------------------------------------------------------------
MICHEL_EMAX = 52.8
_MX = np.linspace(0.0, 1.0, 2001)
_MCDF = 2 * _MX**3 - _MX**4  # CDF of x²(3−2x), normalised


def michel_energy(u):
    """Michel electron energy (MeV) by inverting the CDF 2x³ − x⁴ (mean 0.7·52.8 ≈ 37 MeV)."""
    return MICHEL_EMAX * np.interp(u, _MCDF, _MX)


MU_MINUS_CAPTURE = 0.75  # fraction of stopped μ− captured (no Michel), docs/model.md §5.2
TAU_MU_NS = 2197.0
TAU_MU_AR_NS = 540.0


# --- photons -------------------------------------------------------------------------------------
_COMPTON_E = np.log([0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 1e4])
_COMPTON_L = np.log([4.3, 5.4, 9.1, 12.5, 18.0, 32.0, 52.0, 52.0 * 1e3 / 10 / 8])  # cm


def compton_length(E):
    return math.exp(float(np.interp(math.log(max(E, 0.05)), _COMPTON_E, _COMPTON_L)))


def pair_length(E):
    """Pair-production mean free path (cm): 9/7 X0 at high energy, rising toward 2 m_e."""
    if E <= 2 * ME:
        return math.inf
    f = 1.0 - math.exp(-(E - 2 * ME) / 12.0)
    return 18.0 / max(f, 1e-6)


# fast scalar lookup of the total attenuation μ(E) = 1/λ_C + 1/λ_pair and the pair share (per cm)
_LOG_E0, _LOG_DE, _NTAB = math.log(0.05), 0.01, 1200  # 0.05 MeV .. ~8 GeV
_TAB_MU, _TAB_PAIR = [], []
for _i in range(_NTAB + 1):
    _e = math.exp(_LOG_E0 + _i * _LOG_DE)
    _mu_c, _mu_p = 1.0 / compton_length(_e), 1.0 / pair_length(_e)
    _TAB_MU.append(_mu_c + _mu_p)
    _TAB_PAIR.append(_mu_p / (_mu_c + _mu_p))


def attenuation(E):
    """(μ_total per cm, pair fraction) at photon energy E (MeV), from a 1 %-spaced log table."""
    i = int((math.log(E) - _LOG_E0) / _LOG_DE) if E > 0.05 else 0
    i = min(max(i, 0), _NTAB)
    return _TAB_MU[i], _TAB_PAIR[i]


def klein_nishina(rnd, E):
    """Sample the scattered-photon energy fraction ε and cos θ (Geant4 standard Compton method)."""
    k = E / ME
    e0 = 1.0 / (1.0 + 2.0 * k)
    a1 = -math.log(e0)
    a2 = 0.5 * (1.0 - e0 * e0)
    while True:
        if a1 / (a1 + a2) > rnd.random():
            eps = math.exp(-a1 * rnd.random())
        else:
            eps = math.sqrt(e0 * e0 + (1 - e0 * e0) * rnd.random())
        t = (1.0 - eps) / (k * eps)
        sin2 = t * (2.0 - t)
        if 1.0 - eps * sin2 / (1.0 + eps * eps) >= rnd.random():
            return eps, 1.0 - t


def brem_fraction(rnd, ymin):
    """Photon energy fraction y ∈ [ymin, 1] from dσ/dy ∝ (1/y)(4/3 − 4/3 y + y²) (PDG complete screening)."""
    while True:
        y = ymin ** (1.0 - rnd.random())
        if rnd.random() * (4.0 / 3.0) <= 4.0 / 3.0 - 4.0 / 3.0 * y + y * y:
            return y


def rotate(d, cos_t, phi):
    """Rotate unit vector d (tuple) by polar angle acos(cos_t) and azimuth phi (pure Python)."""
    dx, dy, dz = d
    sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
    # orthonormal basis perpendicular to d
    if abs(dz) < 0.9:
        ax, ay, az = -dy, dx, 0.0
    else:
        ax, ay, az = 0.0, -dz, dy
    n = math.sqrt(ax * ax + ay * ay + az * az)
    ax, ay, az = ax / n, ay / n, az / n
    bx, by, bz = dy * az - dz * ay, dz * ax - dx * az, dx * ay - dy * ax
    c, s = math.cos(phi) * sin_t, math.sin(phi) * sin_t
    return (cos_t * dx + c * ax + s * bx, cos_t * dy + c * ay + s * by, cos_t * dz + c * az + s * bz)


def isotropic(rnd):
    """Isotropic unit vector (pure Python)."""
    cz = 2.0 * rnd.random() - 1.0
    phi = 2.0 * math.pi * rnd.random()
    s = math.sqrt(1.0 - cz * cz)
    return (s * math.cos(phi), s * math.sin(phi), cz)
