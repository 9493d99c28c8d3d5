"""The backbone benchmark (`larpanda.bench.backbone`): its inputs, batching and GEMM accounting."""

import pytest
import torch

from larpanda.bench.backbone import batched, run, tiled_fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiled_fixture_sizes_and_batched_offsets():
    p = tiled_fixture(1)
    n = p.coord.shape[0]
    assert n == 1175 and tiled_fixture(3).coord.shape[0] == 3523
    b = batched(p, 3)
    assert b.offset.tolist() == [n, 2 * n, 3 * n] and torch.equal(b.grid_coord[2 * n:], p.grid_coord)


def test_gemm_accounting_counts_the_same_gemms_in_both_paths():
    """Both paths run the same linear and conv GEMMs: equal GFLOP, and a batch of 2 copies doubles them;
    the floor ratio is below the measured ratio (the rest of the time is not GEMM)."""
    rows = run(points=[], presets=("tiny",), tiles=[1], reps=1, train=False, gemm=True)
    rows2 = run(points=[], presets=("tiny",), tiles=[1], reps=1, train=False, gemm=True, batch=2)
    r, r2 = rows[0], rows2[0]
    assert r["ours_gemm_gflop"] == pytest.approx(r["baseline_gemm_gflop"]) and r["ours_gemm_gflop"] > 0
    assert r2["ours_gemm_gflop"] == pytest.approx(2 * r["ours_gemm_gflop"], rel=1e-5)
    assert r2["input"] == "fixture_x1_batch2" and r2["voxels"] == 2 * r["voxels"]
    assert r["max_abs_diff"] < 1e-4 and 0 < r["eval_floor_ratio"] < r["eval_s"] / r["baseline_eval_s"]
