"""Submanifold conv == dense conv3d restricted to active sites (forward and backward), all algorithms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from larpanda.nn.sparse_conv import OFFSETS, KernelMap, grid_keys, kernel_map, subm_conv


def _random_sites(gen, n_events=2, size=6, fill=0.3):
    grids, batch = [], []
    for b in range(n_events):
        occ = torch.rand(size, size, size, generator=gen) < fill
        g = torch.nonzero(occ)
        grids.append(g)
        batch.append(torch.full((len(g),), b))
    return torch.cat(grids), torch.cat(batch)


def _dense_reference(grid, batch, feat, weight, bias, size):
    """Dense conv3d (cross-correlation, padding 1) per event, read back at the active sites."""
    c_in = feat.shape[1]
    out = []
    for b in batch.unique():
        m = batch == b
        vol = feat.new_zeros(1, c_in, size, size, size)
        g = grid[m]
        vol[0, :, g[:, 0], g[:, 1], g[:, 2]] = feat[m].t()
        y = F.conv3d(vol, weight.permute(0, 4, 1, 2, 3), bias, padding=1)
        out.append(y[0, :, g[:, 0], g[:, 1], g[:, 2]].t())
    return torch.cat(out)


@pytest.mark.device
@pytest.mark.parametrize("algo", ["im2col", "pairs", "reference", "auto"])
@pytest.mark.parametrize("fill", [0.15, 0.6])
def test_forward_backward_equals_dense(algo, fill, device):
    gen = torch.Generator().manual_seed(3)
    size = 6
    grid, batch = _random_sites(gen, 2, size, fill)
    grid, batch = grid.to(device), batch.to(device)
    c_in, c_out = 5, 7
    feat = torch.randn(len(grid), c_in, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    weight = torch.randn(c_out, 3, 3, 3, c_in, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    bias = torch.randn(c_out, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    kmap = KernelMap(grid, batch)
    ours = subm_conv(feat, kmap, weight, bias, algo)
    ref = _dense_reference(grid, batch, feat, weight, bias, size)
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)
    up = torch.randn_like(ref)
    g_ours = torch.autograd.grad((ours * up).sum(), (feat, weight, bias))
    g_ref = torch.autograd.grad((ref * up).sum(), (feat, weight, bias))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.device
def test_events_do_not_leak_and_map_is_exact(device):
    # two events with the same coordinates: neighbours only within the same event
    grid = torch.tensor([[1, 1, 1], [1, 1, 2], [1, 1, 1], [2, 2, 2]], device=device)
    batch = torch.tensor([0, 0, 1, 1], device=device)
    km = KernelMap(grid, batch)
    n = len(grid)
    # row 0 sees row 1 at offset (0,0,+1) = index 9*1+3*1+2 = 14; never rows of event 1
    assert km.nbr[0, 14] == 1 and km.nbr[0, 13] == 0
    assert set(km.nbr[0].tolist()) == {0, 1, n}
    assert km.nbr[2, 26] == 3 and set(km.nbr[2].tolist()) == {2, 3, n}


@pytest.mark.device
def test_kernel_map_generic_strided(device):
    # strided use: output sites on the coarse grid, centred at 2*coarse on the fine grid
    fine = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 2, 2]], device=device)
    size = 8
    keys_in = grid_keys(torch.zeros(3, dtype=torch.long, device=device), fine, size)
    keys_out = grid_keys(torch.zeros(1, dtype=torch.long, device=device), torch.tensor([[0, 0, 0]], device=device), size)
    offs = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    assert kernel_map(keys_out, keys_in, offs, size).tolist() == [[0, 1, 3]]
    assert OFFSETS.shape == (27, 3) and OFFSETS[13].tolist() == [0, 0, 0]
