"""Where a trained graph head (`--head graph`) loses particle ARI: its own clustering against two oracles
on the same events (docs/benchmarks.md, "Graph clustering head").

    python benchmarks/graph_head_oracle.py WEIGHTS DATA [--events 60] [--post edge_threshold=0.4,...]

Per event (true thing points, ARI as `larpanda.metrics`): ``predicted`` = the head's particles;
``oracle_edges`` = the head's fragments joined over the head's own fragment graph by the TRUE same-particle
decision (majority particle of each fragment), i.e. a perfect fragment GNN; ``oracle_merge`` = every
fragment given its majority particle (a perfect GNN on a complete graph); ``fragments`` = the fragments
alone. Also the point-weighted purity of the fragments and their number per event.

An interaction-level head is scored against the true interactions as `larpanda.metrics` scores it (each
event's points not predicted stuff, true LED kept as one label), with these rows instead: ``predicted`` =
its interactions; ``oracle_edges`` = its particles joined over its own particle graph by the TRUE
same-interaction decision (majority interaction of each particle), i.e. a perfect stage 3;
``no_wrong_joins`` / ``no_wrong_splits`` = its average linkage with every particle edge across / inside true
interactions scored 0 / 1; ``particle_cap`` = every predicted particle given its majority interaction;
``fragment_cap`` = every fragment given its majority interaction; ``led_fragments_stuff`` = its interactions
with every fragment that is mostly true LED called stuff (a perfect LED-fragment decision). What the caps
lose is the LED points that the head calls thing, which no grouping can put right.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def majority(seg: torch.Tensor, label: torch.Tensor, num: int) -> torch.Tensor:
    """(num,) the most frequent ``label`` (≥ 0) of each segment of ``seg``."""
    seg, label = seg[label >= 0], label[label >= 0]  # labels < 0 (LED) do not vote
    if len(label) == 0:
        return torch.zeros(num, dtype=torch.long)
    span = int(label.max()) + 1
    key, count = torch.unique(seg * span + label, return_counts=True)
    order = torch.argsort((key // span) * (int(count.max()) + 1) + count)  # by segment, then count
    out = torch.zeros(num, dtype=torch.long)
    out[(key // span)[order]] = (key % span)[order]  # the last write per segment is its largest count
    return out


def interaction_rows(out: dict, truth: torch.Tensor, threshold: float) -> dict:
    """Per thing point, the interaction of each row of the module docstring; ``truth`` (n_thing,) interactions
    (−1 LED)."""
    from larpanda.nn.graph import average_linkage, connected_components

    frag, part = out["fragment_of_thing"], out["particle_of_thing"]
    nf, npart = (int(x.max()) + 1 if len(x) else 0 for x in (frag, part))
    pmaj = majority(part, truth, npart)
    edges, score = out["interaction_edges"], torch.sigmoid(out["interaction_logits"]).double()
    same = pmaj[edges[0]] == pmaj[edges[1]]
    led_fragment = torch.bincount(frag, (truth < 0).double(), minlength=nf) > 0.5 * torch.bincount(frag, minlength=nf)
    size = out["interaction_size"].double()
    w = size[edges[0]] * size[edges[1]]
    return {"predicted": out["interaction_of_thing"],
            "oracle_edges": connected_components(npart, edges[:, same])[part],
            "no_wrong_joins": average_linkage(npart, edges, torch.where(same, score, 0.0), w, threshold)[part],
            "no_wrong_splits": average_linkage(npart, edges, torch.where(same, 1.0, score), w, threshold)[part],
            "particle_cap": pmaj[part], "fragment_cap": majority(frag, truth, nf)[frag],
            "led_fragments_stuff": torch.where(led_fragment[frag], -1, out["interaction_of_thing"])}


def main(argv=None) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from larpanda.io import load_model
    from larpanda.metrics.panoptic import adjusted_rand_index
    from larpanda.nn.graph import connected_components
    from larpanda.tasks.common import iterate_batches, make_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("data", nargs="+")
    ap.add_argument("--events", type=int, default=60)
    ap.add_argument("--post", default="", help="graph head settings, e.g. edge_threshold=0.4")
    a = ap.parse_args(argv)
    model = load_model(a.weights).eval()
    if a.post:
        model.set_postprocess(**dict(kv.split("=") for kv in a.post.split(",")))
    ds = make_dataset(a.data, {"energy_threshold": model.energy_threshold}, train=False)
    scores = {}
    pure = total = n_frag = n_events = 0
    with torch.no_grad():
        for batch in iterate_batches(ds, 4, a.events):
            out = model.decoder(model.features(batch).float(), batch, None)
            fedges = out["fragment_edges"]
            idx, frag, part = out["thing"], out["fragment_of_thing"], out["particle_of_thing"]
            batch_of = torch.repeat_interleave(torch.arange(len(out["counts"])), out["counts"])
            if "interaction_of_thing" in out:
                truth = torch.as_tensor(batch["instance_interaction"]).long()
                for name, ids in interaction_rows(out, truth[idx], model.decoder.post["interaction_threshold"]).items():
                    full = torch.full((len(truth),), -1, dtype=torch.long)
                    full[idx] = ids
                    for e in range(len(out["counts"])):
                        sel = batch_of == e
                        scores.setdefault(name, []).append(adjusted_rand_index(truth[sel].numpy(), full[sel].numpy()))
                n_events += len(out["counts"])
                continue
            truth = torch.as_tensor(batch["instance_particle"]).long()
            nf = int(frag.max()) + 1 if len(frag) else 0
            maj = majority(frag, truth[idx].clamp(min=0), nf)
            joined = connected_components(nf, fedges[:, maj[fedges[0]] == maj[fedges[1]]])[frag]
            n = len(truth)
            labels = {}
            for name, ids in (("predicted", part), ("oracle_edges", joined), ("oracle_merge", maj[frag]), ("fragments", frag)):
                full = torch.full((n,), -1, dtype=torch.long)
                full[idx] = ids
                labels[name] = full
            for e in range(len(out["counts"])):
                sel = (truth >= 0) & (batch_of == e)
                if not sel.any():
                    continue
                n_events += 1
                for name, full in labels.items():
                    scores.setdefault(name, []).append(adjusted_rand_score(truth[sel].numpy(), full[sel].numpy()))
            t = truth[idx]
            for f in range(nf):
                members = t[frag == f]
                members = members[members >= 0]
                if len(members):
                    pure += int(torch.bincount(members).max())
                    total += len(members)
            n_frag += nf
    res = {k: round(float(np.nanmean(v)), 4) for k, v in scores.items()} | {"events": n_events}
    if total:  # particle level
        res |= {"fragment_purity": round(pure / total, 4), "fragments_per_event": round(n_frag / max(n_events, 1), 1)}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
