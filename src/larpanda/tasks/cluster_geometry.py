"""Geometry of point clusters for the graph head (docs/model.md §4.8): per-cluster shape features
(`cluster_geometry`) and the k-nearest-cluster graph with its edge features (`cluster_graph`), in pure torch.

Positions are in voxels; clusters are given by a segment id per point (``seg``, 0..num−1).
"""

from __future__ import annotations

import torch

from ..nn.graph import segment_max, segment_mean

GEOMETRY = 1 + 3 + 6 + 3 + 1  # `cluster_geometry`: log size, centroid, axis⊗axis, spread, energy
EDGE_GEOMETRY = 5
ENDPOINT_GEOMETRY = 4  # `_endpoint_features`
LOCAL_GEOMETRY = 3  # `_endpoint_features` with ``local``


def cluster_geometry(pos, energy, seg, num):
    """Per cluster (num, 14): log size, centroid (/768), principal-axis outer product (6, sign-free),
    spread (sqrt of the covariance eigenvalues, /10 voxels), mean log energy; and the unit principal axes
    (num, 3) and centroids (num, 3) in voxels. ``pos`` (N, 3) voxels, ``energy`` (N,) log-scaled."""
    size = torch.bincount(seg, minlength=num).to(pos.dtype)
    cen = segment_mean(pos, seg, num)
    d = pos - cen[seg]
    cov = segment_mean((d[:, :, None] * d[:, None, :]).reshape(-1, 9), seg, num).reshape(num, 3, 3)
    evals, evecs = torch.linalg.eigh(cov.double() + 1e-6 * torch.eye(3, dtype=torch.float64, device=pos.device))
    axis, evals = evecs[:, :, 2].to(pos.dtype), evals.clamp(min=0).to(pos.dtype)
    iu = torch.triu_indices(3, 3, device=pos.device)
    outer = (axis[:, :, None] * axis[:, None, :])[:, iu[0], iu[1]]
    geo = torch.cat([torch.log1p(size)[:, None], cen / 768.0, outer, evals.sqrt() / 10.0,
                     segment_mean(energy[:, None], seg, num)], 1)
    return geo, axis, cen


def _sample_rows(pos, seg, num, axis, cen, samples: int):
    """Up to ``samples`` rows per cluster, evenly spaced along its principal axis (both ends included)."""
    n = torch.bincount(seg, minlength=num)
    proj = ((pos - cen[seg]) * axis[seg]).sum(1).double()
    span = proj.abs().max().clamp(min=1.0) * 4
    order = torch.argsort(seg.double() * span + proj)
    start = torch.cumsum(n, 0) - n
    k = n.clamp(max=samples)
    owner = torch.repeat_interleave(torch.arange(num, device=pos.device), k)
    j = torch.arange(int(k.sum()), device=pos.device) - torch.repeat_interleave(torch.cumsum(k, 0) - k, k)
    step = (n[owner] - 1).double() / (k[owner] - 1).clamp(min=1).double()
    return order[start[owner] + torch.floor(j.double() * step).long()], owner, j


def _local_tangents(pad, count):
    """(num, samples, 3) unit local direction at each sampled point: the chord between its two neighbours
    along the axis order (one-sided at the ends; zero for one-point clusters). ``pad`` (num, samples, 3)
    holds each cluster's ``count`` (num,) samples in its first slots."""
    k = torch.arange(pad.shape[1], device=pad.device)[None]
    last = (count[:, None] - 1).clamp(min=0)
    nxt = torch.minimum(k + 1, last).clamp(min=0)
    prv = torch.minimum((k - 1).clamp(min=0), last)
    t = pad.gather(1, nxt[:, :, None].expand_as(pad)) - pad.gather(1, prv[:, :, None].expand_as(pad))
    return t / t.norm(dim=2, keepdim=True).clamp(min=1e-6)


def _endpoint_features(pos, seg, num, axis, cen, rows, owner, slot, samples: int, i, j, local: bool = False,
                       chunk: int = 4096):
    """(E, 4) features of cluster pairs (i, j) from their closest sampled points c_i, c_j: min and max over
    the two ends of |t| (where c lies along the cluster's principal axis, 0 at the centroid, 1 at an end)
    and of |a·w| (a: the cluster's axis, w: the unit vector from c_i to c_j; 0 when they touch). Two pieces
    of one track meet end to end along their axes; a particle leaving a vertex or a delta ray leaving a
    track meets the other one on its side or at an angle. With ``local`` (E, 7): also |d_i·d_j| and the min
    and max of |d·w|, where d is the local direction of each cluster at c (`_local_tangents`): a curved or
    long cluster's principal axis is not its direction where the two meet."""
    proj = ((pos - cen[seg]) * axis[seg]).sum(1)
    half = segment_max(proj.abs()[:, None], seg, num).squeeze(1).clamp(min=0.5)
    pad = pos.new_zeros((num, samples, 3))
    pad[owner, slot] = pos[rows]
    missing = torch.ones((num, samples), dtype=torch.bool, device=pos.device)
    missing[owner, slot] = False
    tangent = _local_tangents(pad, (~missing).sum(1)) if local else None
    feats = []
    for c0 in range(0, len(i), chunk):
        a, b = i[c0:c0 + chunk], j[c0:c0 + chunk]
        pa, pb = pad[a], pad[b]
        d = torch.cdist(pa, pb).masked_fill(missing[a][:, :, None] | missing[b][:, None, :], float("inf"))
        best = d.flatten(1).argmin(1)
        e = torch.arange(len(a), device=pos.device)
        si, sj = best // samples, best % samples
        ci, cj = pa[e, si], pb[e, sj]
        ti = (((ci - cen[a]) * axis[a]).sum(1).abs() / half[a]).clamp(max=1)
        tj = (((cj - cen[b]) * axis[b]).sum(1).abs() / half[b]).clamp(max=1)
        w = cj - ci
        norm = w.norm(dim=1, keepdim=True)
        w = torch.where(norm > 0.5, w / norm.clamp(min=1e-6), torch.zeros_like(w))
        fi, fj = (w * axis[a]).sum(1).abs(), (w * axis[b]).sum(1).abs()
        cols = [torch.minimum(ti, tj), torch.maximum(ti, tj), torch.minimum(fi, fj), torch.maximum(fi, fj)]
        if local:
            di, dj = tangent[a, si], tangent[b, sj]
            gi, gj = (w * di).sum(1).abs(), (w * dj).sum(1).abs()
            cols += [(di * dj).sum(1).abs(), torch.minimum(gi, gj), torch.maximum(gi, gj)]
        feats.append(torch.stack(cols, 1))
    width = ENDPOINT_GEOMETRY + (LOCAL_GEOMETRY if local else 0)
    return torch.cat(feats) if feats else pos.new_zeros((0, width))


def cluster_graph(pos, seg, num, cluster_batch, axis, cen, knn: int, samples: int, chunk: int = 2048,
                  endpoints: bool = False, local: bool = False):
    """k-nearest-cluster graph within each event: edges (2, E) with i < j and their (E, 5) features
    [log1p closest distance, log1p centroid distance, |a_i·a_j|, min and max of |a·u|] (a: principal axes,
    u: unit centroid displacement), plus the 4 (``local``: 7) `_endpoint_features` with ``endpoints``.
    Closest distances are over ``samples`` points per cluster."""
    src, dst, dist = [], [], []
    width = edge_width(endpoints, local)
    if num < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=pos.device), torch.zeros((0, width), device=pos.device)
    rows, owner, slot = _sample_rows(pos, seg, num, axis, cen, samples)
    sp = pos[rows]
    for b in torch.unique(cluster_batch).tolist():
        ids = torch.nonzero(cluster_batch == b).squeeze(1)
        if len(ids) < 2:
            continue
        lo = int(ids[0])
        m = torch.nonzero((owner >= lo) & (owner <= int(ids[-1]))).squeeze(1)
        own = owner[m] - lo
        nb = len(ids)
        closest = torch.full((nb, nb), float("inf"), device=pos.device, dtype=pos.dtype)
        for c0 in range(0, len(m), chunk):
            d = torch.cdist(sp[m[c0:c0 + chunk]], sp[m])
            part = torch.full((d.shape[0], nb), float("inf"), device=pos.device, dtype=pos.dtype)
            part = part.scatter_reduce(1, own[None].expand_as(d), d, reduce="amin")
            closest = closest.scatter_reduce(0, own[c0:c0 + chunk, None].expand_as(part), part, reduce="amin")
        closest.fill_diagonal_(float("inf"))
        k = min(knn, nb - 1)
        nbr = torch.topk(closest, k, dim=1, largest=False).indices
        a = torch.arange(nb, device=pos.device).repeat_interleave(k)
        bb = nbr.reshape(-1)
        i, j = torch.minimum(a, bb), torch.maximum(a, bb)
        pair = torch.unique(i * nb + j)
        i, j = pair // nb, pair % nb
        src.append(i + lo)
        dst.append(j + lo)
        dist.append(closest[i, j])
    if not src:
        return cluster_graph(pos, seg, 0, cluster_batch, axis, cen, knn, samples, endpoints=endpoints, local=local)
    i, j, dmin = torch.cat(src), torch.cat(dst), torch.cat(dist)
    disp = cen[j] - cen[i]
    dc = disp.norm(dim=1)
    u = disp / dc.clamp(min=1e-6)[:, None]
    ai, aj = (axis[i] * u).sum(1).abs(), (axis[j] * u).sum(1).abs()
    feat = torch.stack([torch.log1p(dmin), torch.log1p(dc), (axis[i] * axis[j]).sum(1).abs(),
                        torch.minimum(ai, aj), torch.maximum(ai, aj)], 1)
    if endpoints:
        feat = torch.cat([feat, _endpoint_features(pos, seg, num, axis, cen, rows, owner, slot, samples, i, j, local)], 1)
    return torch.stack([i, j]), feat


def edge_width(endpoints: bool, local: bool) -> int:
    """Columns of `cluster_graph`'s edge features."""
    return EDGE_GEOMETRY + (ENDPOINT_GEOMETRY + (LOCAL_GEOMETRY if local else 0) if endpoints else 0)
