"""Cluster geometry for the graph head (`larpanda.tasks.cluster_geometry`): the endpoint and local-direction
features of the k-nearest-cluster graph."""

import math

import torch

from larpanda.tasks.cluster_geometry import cluster_geometry, cluster_graph


def test_endpoint_features_tell_end_to_end_from_side_on():
    """Two collinear pieces of one track, 3 voxels apart end to end, against a track that starts 3 voxels
    beside the middle of another: |t| is 1 at both ends of the first pair and 0 / 1 for the second, and
    the gap direction is along both axes for the first pair, across one of them for the second."""
    a = [(x, 0, 0) for x in range(0, 11)]
    b = [(x, 0, 0) for x in range(13, 24)]  # continues a after a 3-voxel gap
    c = [(x, 50, 0) for x in range(0, 21)]
    d = [(10, y, 0) for y in range(53, 64)]  # leaves the middle of c sideways, 3 voxels away
    pos = torch.tensor(a + b + c + d, dtype=torch.float32)
    seg = torch.repeat_interleave(torch.arange(4), torch.tensor([len(a), len(b), len(c), len(d)]))
    _, axis, cen = cluster_geometry(pos, torch.zeros(len(pos)), seg, 4)
    edges, feat = cluster_graph(pos, seg, 4, torch.zeros(4, dtype=torch.long), axis, cen, knn=1, samples=32,
                                endpoints=True)
    rows = {tuple(e): f for e, f in zip(edges.t().tolist(), feat)}
    ab, cd = rows[(0, 1)], rows[(2, 3)]
    assert torch.allclose(ab[0], torch.tensor(3.0).log1p()) and torch.allclose(cd[0], torch.tensor(3.0).log1p())
    assert torch.allclose(ab[5:], torch.tensor([1.0, 1.0, 1.0, 1.0]), atol=1e-5)  # ends meet along the axes
    assert torch.allclose(cd[5:], torch.tensor([0.0, 1.0, 0.0, 1.0]), atol=1e-5)  # middle of c, end of d, across c


def test_local_directions_follow_a_curved_track_where_its_axis_does_not():
    """A quarter circle (radius 30 voxels) continued, after a 3-voxel gap, by a straight piece along its
    final direction: the arc's principal axis is at ~45° to the gap, but its local direction at the end is
    along it, so |d_i·d_j| and both |d·w| are ~1 while the axis-based min |a·w| is not."""
    arc = sorted({(round(30 * math.cos(t)), round(30 * math.sin(t)), 0) for t in [k * math.pi / 400 for k in range(201)]})
    line = [(-x, 30, 0) for x in range(3, 30)]
    pos = torch.tensor(arc + line, dtype=torch.float32)
    seg = torch.repeat_interleave(torch.arange(2), torch.tensor([len(arc), len(line)]))
    _, axis, cen = cluster_geometry(pos, torch.zeros(len(pos)), seg, 2)
    edges, feat = cluster_graph(pos, seg, 2, torch.zeros(2, dtype=torch.long), axis, cen, knn=1, samples=16,
                                endpoints=True, local=True)
    assert edges.t().tolist() == [[0, 1]] and feat.shape == (1, 12)
    f = feat[0]
    assert f[7] < 0.85  # min over the ends of |axis · gap|: the arc's axis is oblique
    assert torch.all(f[9:] > 0.97), f[9:]  # local directions agree with each other and with the gap
