"""Graph utilities for point clouds, in pure torch (+ scipy for connected components).

* `radius_graph`: every pair of points of the same event closer than ``radius`` (cell list: points are
  binned in cells of side ``radius``, each cell is compared with itself and its 13 "forward" neighbour
  cells, so each pair is found once). Works on any float positions (augmented, rotated coordinates
  included), several points per cell included.
* `connected_components`: component id per node of an undirected edge list.
* `average_linkage`: clusters of a scored graph merged greedily by the weighted mean score of the edges
  between them (one wrong edge cannot merge two clusters that other edges keep apart).
* `segment_mean` / `segment_max` / `segment_sum`: reductions of rows by a segment id; `segment_member_row`: a
  row standing for each (label-pure) segment; `group_size`: the size of each row's group.
"""

from __future__ import annotations

import heapq

import numpy as np
import torch

# The 13 cell offsets (dx, dy, dz) lexicographically after (0, 0, 0), plus (0, 0, 0) itself.
_OFFSETS = [(0, 0, 0)] + [(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) > (0, 0, 0)]


def radius_graph(pos: torch.Tensor, batch: torch.Tensor, radius: float) -> torch.Tensor:
    """Undirected edges (2, E) long with ``src < dst``, every pair (i, j) of the same ``batch`` value with
    ``|pos_i − pos_j| ≤ radius``. ``pos`` (N, 3) float (any unit; ``radius`` in the same unit), ``batch`` (N,)
    long event index. Edges are sorted by (src, dst)."""
    n = pos.shape[0]
    dev = pos.device
    if n < 2:
        return torch.zeros((2, 0), dtype=torch.long, device=dev)
    cell = torch.floor(pos.double() / radius).long()
    cell = cell - cell.min(0).values + 1  # ≥ 1, so that the −1 neighbours stay inside the key range
    span = int(cell.max()) + 2
    key = ((batch.long() * span + cell[:, 0]) * span + cell[:, 1]) * span + cell[:, 2]
    order = torch.argsort(key)
    uniq, counts = torch.unique_consecutive(key[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    src_all, dst_all = [], []
    for dx, dy, dz in _OFFSETS:
        q = key + (dx * span + dy) * span + dz
        slot = torch.searchsorted(uniq, q).clamp(max=len(uniq) - 1)
        hit = torch.nonzero(uniq[slot] == q).squeeze(1)
        c = counts[slot[hit]]
        src = torch.repeat_interleave(hit, c)
        first = torch.repeat_interleave(starts[slot[hit]], c)
        within = torch.arange(len(src), device=dev) - torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
        dst = order[first + within]
        keep = src < dst if (dx, dy, dz) == (0, 0, 0) else src != dst
        src_all.append(src[keep])
        dst_all.append(dst[keep])
    src, dst = torch.cat(src_all), torch.cat(dst_all)
    close = ((pos[src] - pos[dst]) ** 2).sum(1) <= radius * radius
    src, dst = src[close], dst[close]
    lo, hi = torch.minimum(src, dst), torch.maximum(src, dst)
    sort = torch.argsort(lo * n + hi)
    return torch.stack([lo[sort], hi[sort]])


def connected_components(num_nodes: int, edges: torch.Tensor) -> torch.Tensor:
    """(num_nodes,) long component id (0..C−1, numbered by their smallest node) of the undirected graph
    with ``edges`` (2, E); isolated nodes are their own components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    if num_nodes == 0:
        return torch.zeros(0, dtype=torch.long, device=edges.device)
    e = edges.detach().cpu().numpy()
    adj = coo_matrix((np.ones(e.shape[1], np.int8), (e[0], e[1])), shape=(num_nodes, num_nodes))
    _, lab = cc(adj, directed=False)
    return torch.as_tensor(_by_first_node(lab), device=edges.device)


def _by_first_node(lab: np.ndarray) -> np.ndarray:
    """Cluster labels (N,) renumbered 0.. by their first node, so that ids do not depend on traversal order."""
    _, first, inv = np.unique(lab, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inv.reshape(-1)]


def average_linkage(num_nodes: int, edges: torch.Tensor, score: torch.Tensor, weight: torch.Tensor,
                    threshold: float) -> torch.Tensor:
    """(num_nodes,) long cluster id (numbered by their smallest node, as `connected_components`) of
    agglomerative clustering with average linkage on a sparse graph: starting from single nodes, the two
    clusters whose edges (2, E) between them have the highest ``weight``-weighted mean ``score`` (E,) are
    merged, while that mean is above ``threshold``. Connected components of the edges above the threshold
    (single linkage) merge two clusters through one high edge; here one high edge among low ones between
    the same clusters does not (GASP, Bailoni et al. 2022, average linkage). O(E log E), a heap in Python:
    meant for graphs of clusters (hundreds to thousands of edges per event), not of points."""
    if num_nodes == 0:
        return torch.zeros(0, dtype=torch.long, device=edges.device)
    dev = edges.device
    adj: list[dict] = [dict() for _ in range(num_nodes)]  # adj[a][b] = [Σ w·s, Σ w], shared by adj[b][a]
    for (a, b), s, w in zip(edges.detach().cpu().T.tolist(), score.detach().cpu().double().tolist(),
                            weight.detach().cpu().double().tolist()):
        if a == b or w <= 0:
            continue
        e = adj[a].get(b)
        if e is None:
            e = adj[a][b] = adj[b][a] = [0.0, 0.0]
        e[0] += w * s
        e[1] += w
    heap = [(-e[0] / e[1], a, b) for a in range(num_nodes) for b, e in adj[a].items() if a < b]
    heapq.heapify(heap)
    parent = np.arange(num_nodes)
    while heap:
        neg, a, b = heapq.heappop(heap)
        e = adj[a].get(b)
        if e is None or e[0] / e[1] != -neg:  # merged away, or a stale entry of a pair that changed
            continue
        if -neg <= threshold:
            break
        if len(adj[a]) < len(adj[b]):
            a, b = b, a  # b joins a: move the smaller neighbour list
        del adj[a][b], adj[b][a]
        for c, ec in adj[b].items():
            del adj[c][b]
            acc = adj[a].get(c)
            if acc is None:
                acc = adj[a][c] = adj[c][a] = ec
            else:
                acc[0] += ec[0]
                acc[1] += ec[1]
            heapq.heappush(heap, (-acc[0] / acc[1], min(a, c), max(a, c)))
        adj[b] = {}
        parent[b] = a
    root = parent.copy()
    while True:  # every node to its cluster's last surviving node
        nxt = parent[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return torch.as_tensor(_by_first_node(root), device=dev)


def segment_sum(x: torch.Tensor, seg: torch.Tensor, num: int) -> torch.Tensor:
    """(num, ...) sums of the rows of ``x`` (N, ...) by segment id ``seg`` (N,) in [0, num)."""
    return torch.zeros((num,) + x.shape[1:], dtype=x.dtype, device=x.device).index_add_(0, seg, x)


def segment_mean(x: torch.Tensor, seg: torch.Tensor, num: int) -> torch.Tensor:
    """(num, ...) means of the rows of ``x`` by segment (empty segments give 0)."""
    cnt = torch.bincount(seg, minlength=num).clamp(min=1).to(x.dtype)
    return segment_sum(x, seg, num) / cnt.view(-1, *([1] * (x.dim() - 1)))


def segment_max(x: torch.Tensor, seg: torch.Tensor, num: int) -> torch.Tensor:
    """(num, C) row maxima of ``x`` (N, C) by segment (empty segments give 0)."""
    out = torch.zeros((num, x.shape[1]), dtype=x.dtype, device=x.device)
    return out.scatter_reduce(0, seg[:, None].expand_as(x), x, reduce="amax", include_self=False)


def segment_member_row(seg, num: int) -> torch.Tensor:
    """(num,) the row of one member of each segment of ``seg`` (N,) (for label-pure segments, where any member
    stands for its segment)."""
    return torch.zeros(num, dtype=torch.long, device=seg.device).scatter_(0, seg, torch.arange(len(seg), device=seg.device))


def group_size(ids, batch) -> torch.Tensor:
    """(N,) the number of rows sharing each row's (``batch``, ``ids``) pair: the size of its group (e.g. of its
    true particle in its event)."""
    span = int(ids.max()) + 2 if len(ids) else 1
    _, inv, cnt = torch.unique(batch * span + ids + 1, return_inverse=True, return_counts=True)
    return cnt[inv]
