"""Where a trained graph head (`--head graph`) loses particle ARI: its own clustering against two oracles
on the same events (docs/benchmarks.md, "Graph clustering head").

    python benchmarks/graph_head_oracle.py WEIGHTS DATA [--events 60] [--post edge_threshold=0.4,...]

Per event (true thing points, ARI as `larpanda.metrics`): ``predicted`` = the head's particles;
``oracle_edges`` = the head's fragments joined over the head's own fragment graph by the TRUE same-particle
decision (majority particle of each fragment), i.e. a perfect fragment GNN; ``oracle_merge`` = every
fragment given its majority particle (a perfect GNN on a complete graph); ``fragments`` = the fragments
alone. Also the point-weighted purity of the fragments and their number per event.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def majority(seg: torch.Tensor, label: torch.Tensor, num: int) -> torch.Tensor:
    """(num,) the most frequent ``label`` (≥ 0) of each segment of ``seg``."""
    span = int(label.max()) + 1
    key, count = torch.unique(seg * span + label, return_counts=True)
    order = torch.argsort((key // span) * (int(count.max()) + 1) + count)  # by segment, then count
    out = torch.zeros(num, dtype=torch.long)
    out[(key // span)[order]] = (key % span)[order]  # the last write per segment is its largest count
    return out


def main(argv=None) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from larpanda.io import load_model
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
    scores = {"predicted": [], "oracle_edges": [], "oracle_merge": [], "fragments": []}
    pure = total = n_frag = n_events = 0
    with torch.no_grad():
        for batch in iterate_batches(ds, 4, a.events):
            out = model.decoder(model.features(batch).float(), batch, None)
            fedges = out["fragment_edges"]
            idx, frag, part = out["thing"], out["fragment_of_thing"], out["particle_of_thing"]
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
            batch_of = torch.repeat_interleave(torch.arange(len(out["counts"])), out["counts"])
            for e in range(len(out["counts"])):
                sel = (truth >= 0) & (batch_of == e)
                if not sel.any():
                    continue
                n_events += 1
                for name, full in labels.items():
                    scores[name].append(adjusted_rand_score(truth[sel].numpy(), full[sel].numpy()))
            t = truth[idx]
            for f in range(nf):
                members = t[frag == f]
                members = members[members >= 0]
                if len(members):
                    pure += int(torch.bincount(members).max())
                    total += len(members)
            n_frag += nf
    res = {k: round(float(np.mean(v)), 4) for k, v in scores.items()} | {
        "fragment_purity": round(pure / max(total, 1), 4), "fragments_per_event": round(n_frag / max(n_events, 1), 1),
        "events": n_events}
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
