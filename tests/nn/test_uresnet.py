"""UResNet sparse convolutions vs dense torch convolutions (forward and backward), and the network."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from larpanda.nn.uresnet import (CENTRE, DownConv3d, SparseLevel, SubMConv3d, UpConv3d, UResNet, build_uresnet,
                                 num_parameters)


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_sites(rng, batch=2, size=6, n=40):
    rows = []
    for b in range(batch):
        cells = rng.choice(size**3, size=n, replace=False)
        xyz = np.stack(np.unravel_index(cells, (size,) * 3), 1)
        rows.append(np.c_[np.full(n, b), xyz])
    return torch.as_tensor(np.concatenate(rows), dtype=torch.long)


def _densify(feat, coords, batch, size):
    dense = feat.new_zeros((batch, feat.shape[1], size, size, size))
    dense[coords[:, 0], :, coords[:, 1], coords[:, 2], coords[:, 3]] = feat
    return dense


def _gather(dense, coords):
    return dense[coords[:, 0], :, coords[:, 1], coords[:, 2], coords[:, 3]]


def _k2(w_dense, kx, ky, kz):
    return w_dense[:, :, kx, ky, kz]


def _two_levels(seed):
    """Random sites of two events in a 6³ box (seeded), their level and its stride-2 coarsening."""
    torch.manual_seed(seed)
    coords = _random_sites(np.random.default_rng(seed))
    fine = SparseLevel(coords)
    return coords, fine, fine.coarsen()


@pytest.fixture(params=["gather", "loop"])
def conv_path(request, monkeypatch):
    import larpanda.nn.uresnet as U

    monkeypatch.setattr(U, "IM2COL_MAX_ELEMENTS", 0 if request.param == "loop" else 1 << 40)
    return request.param


@pytest.mark.parametrize("seed", [0, 1])
def test_down_conv_equals_dense_conv3d(seed, conv_path):
    coords, fine, coarse = _two_levels(seed)
    cin, cout = 3, 5
    conv = DownConv3d(cin, cout, bias=True).double()
    with torch.no_grad():
        conv.bias.normal_()
    w = torch.zeros(cout, cin, 2, 2, 2, dtype=torch.float64)
    for kx, ky, kz in itertools.product(range(2), repeat=3):
        w[:, :, kx, ky, kz] = conv.weight[kx * 4 + ky * 2 + kz].detach().T
    w.requires_grad_(True)
    feat = torch.randn(len(coords), cin, dtype=torch.float64, requires_grad=True)
    out = conv(feat, fine, coarse)
    dense_in = _densify(feat, coords, 2, 6)
    ref = _gather(F.conv3d(dense_in, w, conv.bias, stride=2), coarse.coords)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    gs = torch.autograd.grad(out, [feat, conv.weight, conv.bias], g)
    gd = torch.autograd.grad(ref, [feat, w], g)
    torch.testing.assert_close(gs[0], gd[0])
    for kx, ky, kz in itertools.product(range(2), repeat=3):
        torch.testing.assert_close(gs[1][kx * 4 + ky * 2 + kz], gd[1][:, :, kx, ky, kz].T)
    assert coarse.coords[:, 1:].max() <= 2 and len(coarse) < len(fine)


@pytest.mark.parametrize("seed", [0, 1])
def test_up_conv_equals_dense_conv_transpose3d(seed, conv_path):
    coords, fine, coarse = _two_levels(seed)
    cin, cout = 4, 3
    conv = UpConv3d(cin, cout).double()
    w = torch.zeros(cin, cout, 2, 2, 2, dtype=torch.float64)
    for kx, ky, kz in itertools.product(range(2), repeat=3):
        w[:, :, kx, ky, kz] = conv.weight[kx * 4 + ky * 2 + kz].detach()
    w.requires_grad_(True)
    feat = torch.randn(len(coarse), cin, dtype=torch.float64, requires_grad=True)
    out = conv(feat, fine)
    ref = _gather(F.conv_transpose3d(_densify(feat, coarse.coords, 2, 3), w, stride=2), coords)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    gs = torch.autograd.grad(out, [feat, conv.weight], g)
    gd = torch.autograd.grad(ref, [feat, w], g)
    torch.testing.assert_close(gs[0], gd[0])
    for kx, ky, kz in itertools.product(range(2), repeat=3):
        torch.testing.assert_close(gs[1][kx * 4 + ky * 2 + kz], gd[1][:, :, kx, ky, kz])


def test_submanifold_conv_equals_dense_conv3d_at_sites(conv_path):
    rng = np.random.default_rng(3)
    coords = _random_sites(rng, n=60)
    level = SparseLevel(coords)
    conv = SubMConv3d(2, 3).double()
    w = torch.zeros(3, 2, 3, 3, 3, dtype=torch.float64)
    for k, (dx, dy, dz) in enumerate(itertools.product((-1, 0, 1), repeat=3)):
        w[:, :, dx + 1, dy + 1, dz + 1] = conv.weight[k].detach().T
    w.requires_grad_(True)
    feat = torch.randn(len(coords), 2, dtype=torch.float64, requires_grad=True)
    out = conv(feat, level)
    ref = _gather(F.conv3d(_densify(feat, coords, 2, 6), w, padding=1), coords)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    gs = torch.autograd.grad(out, [feat, conv.weight], g)
    gd = torch.autograd.grad(ref, [feat, w], g)
    torch.testing.assert_close(gs[0], gd[0])
    for k, (dx, dy, dz) in enumerate(itertools.product((-1, 0, 1), repeat=3)):
        torch.testing.assert_close(gs[1][k], gd[1][:, :, dx + 1, dy + 1, dz + 1].T)


def test_pair_path_under_autocast_runs_in_bf16_and_returns_fp32_gradients(monkeypatch):
    import larpanda.nn.uresnet as U

    monkeypatch.setattr(U, "IM2COL_MAX_ELEMENTS", 0)
    rng = np.random.default_rng(4)
    level = SparseLevel(_random_sites(rng, n=60))
    torch.manual_seed(0)
    conv = SubMConv3d(4, 6)
    feat = torch.randn(len(level), 4, requires_grad=True)
    ref = conv(feat, level)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(feat, level)
    assert out.dtype == torch.bfloat16  # as `feat @ weight` gives under autocast
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert feat.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    g_feat, g_weight = torch.autograd.grad(ref.sum(), [feat, conv.weight])
    torch.testing.assert_close(feat.grad, g_feat, rtol=0.05, atol=0.1)
    torch.testing.assert_close(conv.weight.grad, g_weight, rtol=0.05, atol=0.1)


def test_uresnet_shapes_params_and_batch_independence():
    torch.manual_seed(0)
    model = build_uresnet("uresnet-tiny").eval()
    assert num_parameters(model) == sum(p.numel() for p in model.parameters()) > 0
    rng = np.random.default_rng(0)
    coords = _random_sites(rng, batch=2, size=10, n=80)
    feat = torch.randn(len(coords), 1)
    with torch.no_grad():
        out = model(feat, coords)
        assert out.shape == (len(coords), 5)
        # eval mode: event 0 alone gives the same logits as inside the batch (no cross-event leakage)
        m0 = coords[:, 0] == 0
        alone = model(feat[m0], coords[m0])
    torch.testing.assert_close(alone, out[m0], rtol=1e-4, atol=1e-5)
    # the default preset: depth 5, 32..160 channels, 2 reps
    base = UResNet()
    assert base.planes == [32, 64, 96, 128, 160] and base.reps == 2


def test_gather_and_loop_paths_agree(monkeypatch):
    import larpanda.nn.uresnet as U

    rng = np.random.default_rng(5)
    coords = _random_sites(rng, batch=2, size=8, n=100)
    torch.manual_seed(0)
    model = build_uresnet("uresnet-tiny").double().eval()
    feat = torch.randn(len(coords), 1, dtype=torch.float64, requires_grad=True)
    monkeypatch.setattr(U, "IM2COL_MAX_ELEMENTS", 1 << 40)
    out_fast = model(feat, coords)
    g_fast = torch.autograd.grad(out_fast.sum(), feat)[0]
    monkeypatch.setattr(U, "IM2COL_MAX_ELEMENTS", 0)
    out_loop = model(feat, coords)
    g_loop = torch.autograd.grad(out_loop.sum(), feat)[0]
    torch.testing.assert_close(out_fast, out_loop)
    torch.testing.assert_close(g_fast, g_loop)


def test_submanifold_pairs_match_brute_force_at_the_lattice_edges():
    # sites on the low and high edges of the key fields (0 and 2**16 - 2) and across two batch entries: the key
    # arithmetic of `submanifold_pairs` must find exactly the neighbours a coordinate lookup finds
    edge = [0, 1, 65533, 65534]
    sites = [(b, x, y, z) for b in (0, 1) for x in edge for y in edge for z in edge]
    rng = np.random.default_rng(0)
    sites = [s for s in sites if rng.random() < 0.7]
    level = SparseLevel(torch.tensor(sites, dtype=torch.long))
    row = {s: i for i, s in enumerate(sites)}
    expected = set()
    for (b, x, y, z), i in row.items():
        for k, (dx, dy, dz) in enumerate(itertools.product((-1, 0, 1), repeat=3)):
            j = row.get((b, x + dx, y + dy, z + dz))
            if j is not None and k != CENTRE:
                expected.add((k, j, i))
    offsets, rows_in, rows_out, sizes = level.submanifold_pairs()
    ks = np.repeat(offsets, sizes)
    found = set(zip(ks.tolist(), rows_in.tolist(), rows_out.tolist()))
    assert found == expected and len(found) == len(rows_in) > 0
