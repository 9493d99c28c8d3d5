"""`larpanda.nn.graph`: radius graph against brute force, components, segment reductions."""

import numpy as np
import torch

from larpanda.nn.graph import connected_components, radius_graph, segment_max, segment_mean


def _brute(pos, batch, r):
    d = torch.cdist(pos.double(), pos.double())
    same = batch[:, None] == batch[None, :]
    i, j = torch.nonzero((d <= r) & same & (torch.arange(len(pos))[:, None] < torch.arange(len(pos))[None, :]), as_tuple=True)
    return set(zip(i.tolist(), j.tolist()))


def test_radius_graph_equals_brute_force_on_lattice_and_rotated_points():
    g = torch.Generator().manual_seed(0)
    lattice = torch.randint(0, 12, (400, 3), generator=g).unique(dim=0).float()
    batch = torch.randint(0, 3, (len(lattice),), generator=g)
    for r in (1.0, 1.8, 2.5):
        e = radius_graph(lattice, batch, r)
        assert (e[0] < e[1]).all()
        assert set(zip(*e.tolist())) == _brute(lattice, batch, r)
    # rotated, continuous positions: several points per cell
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g))
    rot = lattice @ q.T * 0.7
    e = radius_graph(rot, batch, 1.8)
    assert set(zip(*e.tolist())) == _brute(rot, batch, 1.8)


def test_radius_graph_never_links_events():
    pos = torch.zeros(4, 3)
    e = radius_graph(pos, torch.tensor([0, 0, 1, 1]), 1.0)
    assert set(zip(*e.tolist())) == {(0, 1), (2, 3)}


def test_connected_components_numbered_by_first_node():
    e = torch.tensor([[4, 1], [5, 3]])  # 4-5, 1-3
    assert connected_components(6, e).tolist() == [0, 1, 2, 1, 3, 3]
    assert connected_components(3, torch.zeros((2, 0), dtype=torch.long)).tolist() == [0, 1, 2]


def test_segment_reductions():
    x = torch.tensor([[1.0, -2.0], [3.0, -4.0], [5.0, 6.0]])
    seg = torch.tensor([0, 0, 2])
    np.testing.assert_allclose(segment_mean(x, seg, 3).numpy(), [[2, -3], [0, 0], [5, 6]])
    np.testing.assert_allclose(segment_max(x, seg, 3).numpy(), [[3, -2], [0, 0], [5, 6]])
