"""The graph clustering head (``--head graph``, docs/model.md §4.8): particles and interactions by staged
clustering, in the spirit of SPINE's GraphSPICE + GrapPA chain, trainable on a CPU.

1. Voxels: a point MLP on the backbone's up-cast features and the log energy gives per-point embeddings
   ``h`` (N, H) and motif logits (N, 5). Points whose LED (class 4) probability is at least ``stuff_threshold``
   are "stuff" (instance −1). The other points are joined by a radius graph (``radius`` voxels, 1.8 = the 26
   neighbours) and an edge MLP scores each edge "same particle"; connected components of the kept edges are
   the *fragments*.
2. Fragments: a small message-passing network over fragments (nodes: pooled embeddings, size, energy,
   centroid, principal axis and spread; edges: each fragment's ``knn`` nearest fragments by closest
   distance) predicts which fragments belong to the same particle (edge scores) and each fragment's PID
   (γ e μ π p). Average-linkage agglomeration of the scored fragment edges (``linkage``; or connected
   components of the kept edges) gives the *particles*. With ``led_fragments`` it also scores each fragment
   "LED" and the fragments at least ``led_fragment_threshold`` likely so become stuff before the grouping.
3. Particles (interaction level only): the same network over particles predicts which share an
   interaction; grouped the same way.

Training runs every stage on the true partitions (the true fragments are the components of the true
"same particle" voxel edges; GrapPA trains on true fragments too), by default also cut where the head's own
scores cut (``predicted_cuts``); with ``led_fragments`` the true LED points that the motif scores call thing
join the voxel and fragment stages as fragments of their own, which no edge joins to anything. Losses:
class-balanced binary cross-entropy for every edge decision and the LED fragments, cross-entropy for motif
and PID. Inference thresholds the voxel edges, groups fragments and particles by
``linkage`` at each stage's threshold and turns instances below ``min_points`` into stuff.

Shapes: N points of a batch, E voxel edges, F fragments, P particles; H = ``hidden``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..constants import LED_CLASS
from ..errors import UserError
from ..data.transforms import SCALE
from ..nn.graph import (average_linkage, connected_components, group_size, radius_graph, segment_max, segment_mean,
                        segment_member_row, segment_sum)
from .cluster_geometry import GEOMETRY, cluster_geometry, cluster_graph, edge_width
from .postprocess_settings import GRAPH_KEYS, GRAPH_THRESHOLDS

DEFAULTS = dict(radius=1.8, hidden=64, layers=3, knn=8, samples=16, edge_threshold=0.5, fragment_threshold=0.5,
                interaction_threshold=0.5, min_points=3, stuff_threshold=None, linkage="average", inference_knn=None,
                predicted_cuts=True, endpoint_features=True, local_directions=True, join_weight="particle",
                motif_context=False, led_fragments=None, led_fragment_threshold=0.5)
JOIN_WEIGHTS = ("fragment", "particle")  # `GraphHead.loss`: what a wrong join of two clusters is weighted by
LINKAGES = ("single", "average")  # `GraphHead._group`: how scored cluster edges become particles / interactions
# `inference_knn`, the fragment graph's neighbours at inference, when not given. Val split of the fixed benchmark,
# average linkage, heads trained with 8: particle ARI 0.817 / 0.854 / 0.858 with 8 / 12 / 16 at inference; an
# interaction head trained with the plain recipe 0.818 / 0.837 / 0.846, its particle graph kept at 8 (docs/benchmarks.md)
FRAGMENT_INFERENCE_KNN = 16
# `stuff_threshold`, the LED probability from which a point is stuff, when not given. The ARI skips the points
# predicted stuff, and LED points called thing and put into interactions cost it most: on the val split of the fixed
# benchmark an interaction head gave ARI 0.837 / 0.852 / 0.866 / 0.870, F1 0.929 / 0.941 / 0.940 / 0.937, PQ
# 0.891 / 0.899 / 0.898 / 0.879 at 0.5 / 0.3 / 0.2 / 0.1 (docs/benchmarks.md)
STUFF_THRESHOLD = 0.2
# With `led_fragments` (the fragment stage drops the LED fragments the motif scores call thing) the point decision can
# lose fewer thing points: an interaction head on the val split gave ARI 0.870 / 0.884 / 0.887 / 0.865, F1 0.939 /
# 0.945 / 0.947 / 0.934, PQ 0.878 / 0.894 / 0.897 / 0.885 at 0.2 / 0.3 / 0.4 / 0.5 (docs/benchmarks.md)
STUFF_THRESHOLD_LED_FRAGMENTS = 0.3
NUM_MOTIF, NUM_PID = 5, 5
CONTEXT_RADIUS = 3.0  # voxels: `GraphHead._with_context`, the neighbourhood of each point for its motif
NODE_GEOMETRY = NUM_MOTIF + GEOMETRY  # + mean motif probabilities


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.GELU(), nn.Linear(h, o))


class GraphNet(nn.Module):
    """Message passing over a graph with undirected edges (2, E), symmetric in the two ends of an edge:
    edge update ``e ← LN(e + MLP([x_i + x_j, |x_i − x_j|, e]))``, node update ``x ← LN(x + MLP([x,
    mean of incident e]))``. Outputs per-edge logits (E,) and per-node logits (M, node_classes)."""

    def __init__(self, node_in: int, edge_in: int, hidden: int, layers: int, node_classes: int = 0):
        super().__init__()
        self.node_in, self.edge_in = _mlp(node_in, hidden, hidden), _mlp(edge_in, hidden, hidden)
        self.edge_mlps = nn.ModuleList(_mlp(3 * hidden, hidden, hidden) for _ in range(layers))
        self.node_mlps = nn.ModuleList(_mlp(2 * hidden, hidden, hidden) for _ in range(layers))
        self.edge_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.node_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.edge_out = nn.Linear(hidden, 1)
        self.node_out = nn.Linear(hidden, node_classes) if node_classes else None

    def forward(self, x, e, edges):
        x, e = self.node_in(x), self.edge_in(e)
        i, j = edges
        both = torch.cat([i, j])
        for em, nm, en, nn_ in zip(self.edge_mlps, self.node_mlps, self.edge_norms, self.node_norms):
            e = en(e + em(torch.cat([x[i] + x[j], (x[i] - x[j]).abs(), e], 1)))
            agg = segment_mean(torch.cat([e, e]), both, x.shape[0])
            x = nn_(x + nm(torch.cat([x, agg], 1)))
        node = self.node_out(x) if self.node_out is not None else None
        return x, self.edge_out(e).squeeze(1), node


def edge_weights(edges, size, target, truth_size, join_weight: str = "particle") -> torch.Tensor:
    """(E,) loss weights of cluster edges (2, E) from what deciding each wrong costs the ARI, which counts
    pairs of points. An edge inside one true cluster (``target`` True): log(1 + the smaller end's ``size``),
    since leaving it out splits off at most that piece (events have hundreds of one-voxel shower
    fragments). An edge between two true clusters: with ``join_weight="particle"`` log(1 + the smaller of
    the two *true* clusters' sizes ``truth_size`` (E-indexable per cluster)), since joining a one-voxel
    fragment of a shower to a track merges the whole shower with the track (docs/benchmarks.md, "Wrong
    joins weighted by the particles they merge"); with ``"fragment"`` like the edges inside."""
    w = torch.log1p(torch.minimum(size[edges[0]], size[edges[1]]).float())
    if join_weight == "particle":
        across = torch.log1p(torch.minimum(truth_size[edges[0]], truth_size[edges[1]]).float())
        w = torch.where(target, w, across)
    return w


def balanced_bce(logit, target, weight=None):
    """Binary cross-entropy with positives and negatives weighted equally (each class's mean, weighted by
    ``weight`` (E,) when given, averaged over the classes present)."""
    if logit.numel() == 0:
        return logit.sum()
    loss = F.binary_cross_entropy_with_logits(logit, target.float(), reduction="none")
    w = torch.ones_like(loss) if weight is None else weight.to(loss.dtype)
    parts = [(loss * w)[target == v].sum() / w[target == v].sum().clamp(min=1e-12)
             for v in (False, True) if (target == v).any()]
    return sum(parts) / len(parts)


class GraphHead(nn.Module):
    """Staged graph clustering on backbone features (module docstring). ``level``: "particle" (voxels →
    fragments → particles with PID) or "interaction" (… → interactions)."""

    def __init__(self, in_channels: int, level: str = "particle", radius: float = 1.8, hidden: int = 64,
                 layers: int = 3, knn: int = 8, samples: int = 16, edge_threshold: float = 0.5,
                 fragment_threshold: float = 0.5, interaction_threshold: float = 0.5, min_points: int = 3,
                 stuff_threshold: float | None = None, linkage: str = "average", inference_knn: int | None = None,
                 predicted_cuts: bool = True, endpoint_features: bool = True, local_directions: bool = True,
                 join_weight: str = "particle", motif_context: bool = False, led_fragments: bool | None = None,
                 led_fragment_threshold: float = 0.5):
        super().__init__()
        if join_weight not in JOIN_WEIGHTS:
            raise UserError(f"graph head: join_weight={join_weight!r} (choose from {', '.join(JOIN_WEIGHTS)})")
        self.join_weight = join_weight
        self.predicted_cuts, self.endpoints = bool(predicted_cuts), bool(endpoint_features)
        self.local = self.endpoints and bool(local_directions)
        edge_in = edge_width(self.endpoints, self.local)
        # one more fragment output, P(LED fragment) (`_drop_led_fragments`); by default at the interaction level only
        self.led_fragments = level == "interaction" if led_fragments is None else bool(led_fragments)
        if stuff_threshold is None:
            stuff_threshold = STUFF_THRESHOLD_LED_FRAGMENTS if self.led_fragments else STUFF_THRESHOLD
        self.post = {}
        self.set_post(edge_threshold=edge_threshold, fragment_threshold=fragment_threshold,
                      interaction_threshold=interaction_threshold, min_points=min_points,
                      stuff_threshold=stuff_threshold,
                      linkage=linkage, led_fragment_threshold=led_fragment_threshold,
                      inference_knn=FRAGMENT_INFERENCE_KNN if inference_knn is None else inference_knn)
        self.level, self.radius, self.knn, self.samples = level, float(radius), int(knn), int(samples)
        self.point = nn.Sequential(nn.LayerNorm(in_channels + 1), _mlp(in_channels + 1, hidden, hidden))
        self.context = bool(motif_context)
        self.motif = _mlp(2 * hidden + 1, hidden, NUM_MOTIF) if self.context else nn.Linear(hidden, NUM_MOTIF)
        self.voxel_edge = _mlp(2 * hidden + 2, hidden, 1)
        self.fragment = GraphNet(2 * hidden + NODE_GEOMETRY, edge_in, hidden, layers, NUM_PID + self.led_fragments)
        self.particle = (GraphNet(hidden + NODE_GEOMETRY + NUM_PID, edge_in, hidden, layers)  # `_interactions` nodes
                         if level == "interaction" else None)

    def _with_context(self, h, pos, batch):
        """(N, 2H + 1) ``h`` with the mean ``h`` of each point's neighbours within `CONTEXT_RADIUS` voxels (all
        points, LED included) and log(1 + their number) / 4, for the motif logits: whether a low-energy voxel
        beside a track or shower is LED (stuff) is told by what surrounds it."""
        i, j = radius_graph(pos, batch, CONTEXT_RADIUS)
        n, both = h.shape[0], torch.cat([i, j])  # each undirected edge in both directions
        mean = segment_mean(torch.cat([h[j], h[i]]), both, n)
        deg = torch.bincount(both, minlength=n).to(h.dtype)
        return torch.cat([h, mean, torch.log1p(deg)[:, None] / 4], 1)

    def _clusters(self, pos, energy, seg, num, batch, knn: int):
        """Geometry (num, 14) and the ``knn``-nearest-cluster graph of clusters ``seg`` of the thing points."""
        geo, axis, cen = cluster_geometry(pos, energy, seg, num)
        cb = torch.zeros(num, dtype=torch.long, device=pos.device).scatter_(0, seg, batch)
        edges, efeat = cluster_graph(pos, seg, num, cb, axis, cen, knn, self.samples, endpoints=self.endpoints,
                                     local=self.local)
        return geo, edges, efeat

    def set_post(self, **values) -> dict:
        """Update the inference settings (`postprocess_settings.GRAPH_KEYS`): the score thresholds of the
        three stages (each in (0, 1)), ``min_points``, the smallest instance kept (smaller ones become
        stuff, −1), ``linkage`` (`_group`) and ``inference_knn``, the neighbours of each fragment in the
        fragment graph at inference (``knn`` is the training graph's and the particle graph's;
        `FRAGMENT_INFERENCE_KNN`): average linkage weighs every edge between two clusters, and on the val split
        of the fixed benchmark a particle head trained with 8 neighbours gave ARI 0.817 / 0.854 / 0.858 / 0.855
        with 8 / 12 / 16 / 24 at inference (single linkage with 16: 0.658, docs/benchmarks.md); ``stuff_threshold``
        and ``led_fragment_threshold`` (in (0, 1); the latter used by heads with ``led_fragments``). Returns all of
        them."""
        cur = dict(self.post)
        for k, v in values.items():
            if k not in GRAPH_KEYS:
                raise UserError(f"graph head: unknown setting {k!r} (choose from {', '.join(GRAPH_KEYS)})")
            if k == "linkage":
                if v not in LINKAGES:
                    raise UserError(f"graph head: linkage={v!r} (choose from {', '.join(LINKAGES)})")
                cur[k] = str(v)
                continue
            try:
                count = k in ("min_points", "inference_knn")
                v = int(v) if count else float(v)
            except (TypeError, ValueError):
                raise UserError(f"graph head: {k}={v!r} is not a number") from None
            if (count and v < 1) or (not count and not 0.0 < v < 1.0):
                raise UserError(f"graph head: {k}={v} must be " + ("≥ 1" if count else "in (0, 1)"))
            cur[k] = v
        self.post = cur
        return dict(cur)

    def _keep(self, logits, target, stage: int):
        """Edges kept at ``stage`` (0 voxels, 1 fragments, 2 particles): at inference (``target`` None) those
        scored above the stage's threshold; in training the true ones, also cut where the head's own score
        is below its threshold with ``predicted_cuts`` (the next stage then learns to repair the
        over-segmentation it meets at inference; parts of different particles are never joined)."""
        scored = torch.sigmoid(logits.detach()) > self.post[GRAPH_THRESHOLDS[stage]]
        if target is None:
            return scored
        return target & scored if self.predicted_cuts else target

    def _group(self, num: int, edges, logits, target, stage: int, size):
        """(num,) the cluster of each of ``num`` fragments (stage 1) or particles (stage 2) from their scored
        edges (2, E): in training the components of the `_keep` edges; at inference with ``linkage``
        "single" the components of the edges above the stage's threshold, with "average" (the default)
        `average_linkage` at that threshold, each edge weighted by the product of its ends' ``size`` (num,)
        in points (the mean is then over point pairs, what the ARI counts). A one-voxel fragment scored
        "same particle" with both a shower and a track merges them under single linkage; on the 200 val
        events of the fixed benchmark average linkage raised the particle ARI from 0.815 to 0.828
        (docs/benchmarks.md)."""
        if target is not None or self.post["linkage"] == "single":
            return connected_components(num, edges[:, self._keep(logits, target, stage)])
        w = size[edges[0]].double() * size[edges[1]].double()
        return average_linkage(num, edges, torch.sigmoid(logits.detach().float()), w, self.post[GRAPH_THRESHOLDS[stage]])

    def forward(self, feat, point, truth: dict | None = None) -> dict:
        """``feat`` (N, C) backbone features of a collated ``point`` batch (``coord``, ``feat``, ``offset``).
        ``truth`` (training): the batch's ``instance_particle``, ``instance_interaction`` (N,) ids (−1 LED)
        and ``segment_motif``/``segment_pid``; every stage then runs on the true partitions (cut as
        `_keep` says) and the outputs carry the targets for `loss`. Without ``truth`` each stage's thresholded predictions are
        used, and the outputs carry per-point ``particle``/``interaction`` ids (−1 stuff)."""
        offset = torch.as_tensor(point["offset"], device=feat.device).long()
        counts = torch.diff(offset, prepend=offset.new_zeros(1))
        batch = torch.repeat_interleave(torch.arange(len(counts), device=feat.device), counts)
        pos = point["coord"].float() * SCALE
        energy = point["feat"][:, 3].float()
        h = self.point(torch.cat([feat, energy[:, None]], 1))
        motif = self.motif(self._with_context(h, pos, batch) if self.context else h)
        prob = motif.softmax(1)
        if truth is not None:
            thing = truth["instance_particle"] >= 0
            if self.led_fragments:  # and the LED points it would call thing: the fragment stage learns to drop them
                thing |= prob[:, LED_CLASS].detach() < STUFF_THRESHOLD  # 0.2 as in the runs measured
        else:
            thing = prob[:, LED_CLASS] < self.post["stuff_threshold"]
        idx = torch.nonzero(thing).squeeze(1)
        out = {"motif_logits": motif, "counts": counts, "thing": idx}
        if truth is not None:
            out["motif_target"] = truth["segment_motif"]
        hp, pp, pb = h[idx], pos[idx], batch[idx]
        edges = radius_graph(pp, pb, self.radius)
        i, j = edges
        dist = (pp[i] - pp[j]).norm(dim=1, keepdim=True) / self.radius
        ef = torch.cat([hp[i] + hp[j], (hp[i] - hp[j]).abs(), dist, (energy[idx][i] - energy[idx][j]).abs()[:, None]], 1)
        out["voxel_logits"] = self.voxel_edge(ef).squeeze(1)
        if truth is not None:
            part_pt = truth["instance_particle"][idx]
            out["voxel_target"] = part_pt[i] == part_pt[j]
        frag = connected_components(len(idx), edges[:, self._keep(out["voxel_logits"], out.get("voxel_target"), 0)])
        nf = int(frag.max()) + 1 if len(frag) else 0
        geo, fedges, fefeat = self._clusters(pp, energy[idx], frag, nf, pb,
                                             self.knn if truth is not None else self.post["inference_knn"])
        fnode = torch.cat([segment_mean(hp, frag, nf), segment_max(hp, frag, nf), segment_mean(prob[idx], frag, nf), geo], 1)
        xf, out["fragment_logits"], node = self.fragment(fnode, fefeat, fedges)
        out["pid_logits"] = node[:, :NUM_PID]
        out["fragment_size"], out["fragment_of_thing"] = torch.bincount(frag, minlength=nf), frag
        out["fragment_edges"] = fedges
        if truth is not None:
            first = segment_member_row(frag, nf)
            fpart = part_pt[first]  # −1: a fragment of LED points (`led_fragments`), never part of a particle
            out["fragment_target"] = (fpart[fedges[0]] == fpart[fedges[1]]) & (fpart[fedges[0]] >= 0)
            out["fragment_truth_size"] = torch.where(fpart >= 0, group_size(part_pt, pb)[first], out["fragment_size"])
            out["pid_target"] = truth["segment_pid"][idx][first]
        stage = dict(edges=fedges, logits=out["fragment_logits"], target=out.get("fragment_target"),
                     size=out["fragment_size"], pid=out["pid_logits"], state=xf)
        if self.led_fragments:
            keep_pt, frag, stage = self._drop_led_fragments(out, node[:, NUM_PID], frag, stage,
                                                            fpart < 0 if truth is not None else None)
            idx, pp, pb, nf = idx[keep_pt], pp[keep_pt], pb[keep_pt], len(stage["size"])
        part_of_frag = self._group(nf, stage["edges"], stage["logits"], stage["target"], 1, stage["size"])
        npart = int(part_of_frag.max()) + 1 if nf else 0
        part = part_of_frag[frag]
        w = torch.log1p(stage["size"].float())[:, None]  # a particle's PID: its fragments', weighted by log(1 + size)
        pid_prob = segment_sum(stage["pid"].softmax(1) * w, part_of_frag, npart)
        out.update(particle_of_thing=part, particle_pid=pid_prob / pid_prob.sum(1, keepdim=True).clamp(min=1e-9))
        if self.particle is not None:
            inter_truth = truth["instance_interaction"][idx] if truth is not None else None
            out["interaction_of_thing"] = self._interactions(stage["state"], prob[idx], out, pp, energy[idx], part, part_of_frag,
                                                             npart, pb, inter_truth)[part]
        return out

    def _drop_led_fragments(self, out, logits, frag, stage: dict, truth_led):
        """Remove the LED fragments (``led_fragments``): the fragments of true LED points in training
        (``truth_led`` (F,) bool), at inference those with P(LED fragment) ≥ ``led_fragment_threshold``. The
        motif classifier sees one point; whether a small blob beside a shower is a Compton fragment too small to
        be a particle (LED) or a piece of the shower is told by the fragment graph. Writes
        ``led_fragment_logits`` (F,) (and ``_target``), ``thing`` and ``fragment_of_thing`` into ``out``; at
        inference also the kept fragments' outputs. Returns the kept thing points (n_thing,) bool, their
        fragments renumbered and ``stage`` (per fragment: size, pid, state; per edge: edges, logits, target)
        restricted to the kept fragments."""
        out["led_fragment_logits"] = logits
        if truth_led is not None:
            out["led_fragment_target"] = drop = truth_led
        else:
            drop = torch.sigmoid(logits.detach()) >= self.post["led_fragment_threshold"]
        keep = ~drop
        remap = torch.cumsum(keep.long(), 0) - 1
        keep_pt = keep[frag]
        edges = stage["edges"]
        kept_edge = keep[edges[0]] & keep[edges[1]]
        kept = {k: v[keep] for k, v in stage.items() if k in ("size", "pid", "state")}
        kept |= {k: v[kept_edge] if v is not None else None for k, v in stage.items() if k in ("logits", "target")}
        kept["edges"] = remap[edges[:, kept_edge]]
        frag = remap[frag[keep_pt]]
        out["thing"], out["fragment_of_thing"] = out["thing"][keep_pt], frag
        if truth_led is None:
            out.update(fragment_edges=kept["edges"], fragment_logits=kept["logits"], fragment_size=kept["size"],
                       pid_logits=kept["pid"], led_fragment_logits=logits[keep])
        return keep_pt, frag, kept

    def _interactions(self, xf, prob, out, pos, energy, part, part_of_frag, npart, batch, truth_ids):
        """Stage 3: score "same interaction" over the k-nearest graph of the ``npart`` particles (``part``
        (n_thing,), ``part_of_frag`` (F,)) with ``self.particle`` (nodes: mean fragment state ``xf``, PID,
        mean motif probabilities ``prob`` (n_thing, 5), geometry); writes ``interaction_logits``/``_edges``/
        ``_size`` (and ``_target`` with ``truth_ids`` (n_thing,)) into ``out``; returns the interaction of
        each particle (`_group`)."""
        geo, edges, efeat = self._clusters(pos, energy, part, npart, batch, self.knn)  # 12 or 16 at inference: lower val ARI
        node = torch.cat([segment_mean(xf, part_of_frag, npart), out["particle_pid"],
                          segment_mean(prob, part, npart), geo], 1)
        _, logits, _ = self.particle(node, efeat, edges)
        out.update(interaction_logits=logits, interaction_edges=edges, interaction_size=torch.bincount(part, minlength=npart))
        target = None
        if truth_ids is not None:
            first = segment_member_row(part, npart)
            t = truth_ids[first]
            target = out["interaction_target"] = t[edges[0]] == t[edges[1]]
            out["interaction_truth_size"] = group_size(truth_ids, batch)[first]
        return self._group(npart, edges, logits, target, 2, out["interaction_size"])

    def loss(self, out: dict):
        """(loss, logs): motif CE + balanced BCE of the voxel, fragment (and particle) edges, each cluster
        edge weighted by `edge_weights`, + PID CE of the fragments and (``led_fragments``) balanced BCE of their
        LED decision, both weighted by log(1 + size)."""
        def size_weight(level):
            return edge_weights(out[f"{level}_edges"], out[f"{level}_size"], out[f"{level}_target"],
                                out[f"{level}_truth_size"], self.join_weight)

        parts = {"motif": F.cross_entropy(out["motif_logits"], out["motif_target"]),
                 "voxel_edge": balanced_bce(out["voxel_logits"], out["voxel_target"]),
                 "fragment_edge": balanced_bce(out["fragment_logits"], out["fragment_target"],
                                               size_weight("fragment"))}
        fragment_weight = torch.log1p(out["fragment_size"].float())
        ok = (out["pid_target"] >= 0) & (out["pid_target"] < NUM_PID)
        if ok.any():
            w = fragment_weight[ok]
            ce = F.cross_entropy(out["pid_logits"][ok], out["pid_target"][ok], reduction="none")
            parts["pid"] = (ce * w).sum() / w.sum()
        if "led_fragment_target" in out:
            parts["led_fragment"] = balanced_bce(out["led_fragment_logits"], out["led_fragment_target"], fragment_weight)
        if "interaction_logits" in out:
            parts["interaction_edge"] = balanced_bce(out["interaction_logits"], out["interaction_target"],
                                                     size_weight("interaction"))
        total = sum(parts.values())
        return total, {f"loss_{k}": float(v.detach()) for k, v in parts.items()} | {"loss": float(total.detach())}

    def postprocess(self, out: dict, background_class: int) -> dict:
        """(B, N_max) ``instance`` (0.. per event, −1 stuff and padding), ``cls`` (PID at the particle level;
        1 = thing at the interaction level; ``background_class`` for stuff) and ``score`` (PID
        probability, or motif probability at the interaction level)."""
        counts = out["counts"]
        n = int(counts.sum())
        B, nmax = len(counts), int(counts.max()) if len(counts) else 0
        dev = counts.device
        batch = torch.repeat_interleave(torch.arange(B, device=dev), counts)
        col = torch.arange(n, device=dev) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        idx = out["thing"]
        inst_flat = torch.full((n,), -1, dtype=torch.long, device=dev)
        cls_flat = torch.full((n,), background_class, dtype=torch.long, device=dev)
        score_flat = out["motif_logits"].softmax(1).max(1).values.float()
        if self.level == "particle":
            ids = out["particle_of_thing"]
            pid = out["particle_pid"]
            cls_flat[idx] = pid.argmax(1)[ids]
            score_flat[idx] = pid.max(1).values[ids].float()
        else:
            ids = out["interaction_of_thing"]
            cls_flat[idx] = 1
        if self.post["min_points"] > 1 and len(idx):  # instances below min_points become stuff
            small = torch.bincount(ids)[ids] < self.post["min_points"]
            cls_flat[idx[small]] = background_class
            idx, ids = idx[~small], torch.unique(ids[~small], return_inverse=True)[1]
        if len(idx):  # renumber 0.. within each event (global ids are ordered by event)
            first = torch.full((B,), n, dtype=torch.long, device=dev).scatter_reduce(0, batch[idx], ids, reduce="amin")
            inst_flat[idx] = ids - first[batch[idx]]
        res = {}
        for key, flat, fill in (("instance", inst_flat, -1), ("cls", cls_flat, background_class), ("score", score_flat, 0.0)):
            t = torch.full((B, nmax), fill, dtype=flat.dtype, device=dev)
            t[batch, col] = flat
            res[key] = t
        return res
