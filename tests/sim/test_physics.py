"""Physics tables and samplers of the simulator against spec-data §5 numbers."""

import math
import random

import numpy as np
import pytest

from larpanda.sim import physics as ph


@pytest.mark.parametrize("T,cm", [(10, 0.71), (50, 10.8), (100, 30.4), (300, 123.5), (1000, 441), (5000, 2024)])
def test_muon_csda_range_matches_table(T, cm):
    assert ph.range_table(ph.MMU).range(T) == pytest.approx(cm, rel=0.04)


@pytest.mark.parametrize("T,cm", [(50, 2.3), (100, 7.8), (200, 26)])
def test_proton_range_matches_mass_scaling(T, cm):
    assert ph.range_table(ph.MP).range(T) == pytest.approx(cm, rel=0.05)


def test_range_energy_inverse_and_mip():
    t = ph.range_table(ph.MPI)
    T = np.array([1.0, 7.0, 80.0, 900.0])
    assert np.allclose(t.energy(t.range(T)), T, rtol=1e-6)
    assert float(ph.bethe_dedx(np.array([270.0]), ph.MMU)[0]) == pytest.approx(2.10, abs=0.03)


def test_michel_spectrum_mean_and_endpoint():
    u = np.random.default_rng(0).random(200_000)
    E = ph.michel_energy(u)
    assert E.max() <= ph.MICHEL_EMAX + 1e-9 and E.min() >= 0
    assert E.mean() == pytest.approx(0.7 * 52.8, abs=0.25)  # ≈ 37 MeV (spec-data §5.6)
    # shape x²(3−2x): the density rises to the endpoint; last decile holds 1 − F(0.9) = 0.1441
    assert np.mean(E > 0.9 * 52.8) == pytest.approx(1 - (2 * 0.9**3 - 0.9**4), abs=0.005)


def test_recombination_at_mip():
    assert float(ph.recombination(2.1)) == pytest.approx(0.70, abs=0.02)
    assert ph.recombination(20.0) < ph.recombination(2.1)


def test_klein_nishina_mean_energy_transfer():
    # mean fraction of photon energy given to the electron at 1 MeV is ≈ 0.44 (Klein–Nishina)
    rnd = random.Random(1)
    f = [1 - ph.klein_nishina(rnd, 1.0)[0] for _ in range(20000)]
    assert np.mean(f) == pytest.approx(0.44, abs=0.02)
    # energy/angle consistency: Compton formula
    eps, c = ph.klein_nishina(rnd, 2.0)
    assert eps == pytest.approx(1 / (1 + 2.0 / ph.ME * (1 - c)), rel=1e-9)


def test_delta_rate_and_spectrum():
    # spec-data §5.4: ≈ 0.03 / cm above 3 MeV for a relativistic muon
    assert float(ph.delta_rate(1.0, 3.0, 1e4)) == pytest.approx(0.0966 / 3, rel=0.02)
    u = np.random.default_rng(0).random(100_000)
    T = ph.sample_inv_square(u, 3.0, 100.0)
    # P(T > 6) for 1/T² on [3, 100] = (1/6 − 1/100)/(1/3 − 1/100)
    assert np.mean(T > 6) == pytest.approx((1 / 6 - 1 / 100) / (1 / 3 - 1 / 100), abs=0.01)


def test_rotate_preserves_angle():
    rnd = random.Random(0)
    d = ph.isotropic(rnd)
    n = ph.rotate(d, 0.3, 1.0)
    assert math.isclose(sum(a * a for a in n), 1.0, rel_tol=1e-12)
    assert math.isclose(sum(a * b for a, b in zip(d, n)), 0.3, rel_tol=1e-9)


def test_moyal_fluctuation_is_centred():
    x = ph.moyal_fluctuation(np.random.default_rng(0), 400_000)
    assert abs(x.mean()) < 0.01 and x.max() <= 6.0 - 1.19 + 1e-9
