"""`larpanda.nn.graph`: radius graph against brute force, components, segment reductions."""

import numpy as np
import torch

from larpanda.nn.graph import average_linkage, connected_components, radius_graph, segment_max, segment_mean


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


def test_average_linkage_does_not_merge_through_one_bridging_node():
    # two triangles {0, 1, 2} and {3, 4, 5} scored 0.9 inside, node 6 scored high to both (2-6, 6-3), and two
    # low edges between the triangles: single linkage (components above 0.5) joins everything; average
    # linkage gives 6 to the left triangle (its higher edge), then the mean between the two sides is 0.32
    e = torch.tensor([[0, 1, 0, 3, 4, 3, 2, 6, 2, 1], [1, 2, 2, 4, 5, 5, 6, 3, 3, 4]])
    s = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.8, 0.75, 0.1, 0.1])
    w = torch.ones(len(s))
    assert connected_components(7, e[:, s > 0.5]).tolist() == [0] * 7
    assert average_linkage(7, e, s, w, 0.5).tolist() == [0, 0, 0, 1, 1, 1, 0]
    # the weights decide the mean: a heavy 6-3 edge pulls the right triangle in as well
    w[7] = 10.0
    assert average_linkage(7, e, s, w, 0.5).tolist() == [0] * 7
    assert average_linkage(7, e, s, torch.ones(len(s)), 0.95).tolist() == list(range(7))
    assert average_linkage(0, torch.zeros((2, 0), dtype=torch.long), torch.zeros(0), torch.zeros(0), 0.5).tolist() == []


def test_average_linkage_on_a_forest_equals_connected_components():
    # in a forest two clusters share at most one edge, so the mean between them is that edge's score
    g = torch.Generator().manual_seed(1)
    for n in (2, 9, 60):
        parent = torch.tensor([int(torch.randint(0, max(k, 1), (1,), generator=g)) for k in range(1, n)])
        child = torch.arange(1, n)
        keep = torch.rand(n - 1, generator=g) > 0.2  # some trees
        e = torch.stack([parent[keep], child[keep]])
        s = torch.rand(e.shape[1], generator=g)
        w = torch.rand(e.shape[1], generator=g) + 0.1
        assert average_linkage(n, e, s, w, 0.5).tolist() == connected_components(n, e[:, s > 0.5]).tolist()


def test_segment_reductions():
    x = torch.tensor([[1.0, -2.0], [3.0, -4.0], [5.0, 6.0]])
    seg = torch.tensor([0, 0, 2])
    np.testing.assert_allclose(segment_mean(x, seg, 3).numpy(), [[2, -3], [0, 0], [5, 6]])
    np.testing.assert_allclose(segment_max(x, seg, 3).numpy(), [[3, -2], [0, 0], [5, 6]])
