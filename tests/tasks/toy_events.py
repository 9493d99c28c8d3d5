"""Small synthetic 5-class events for the task tests (not physics: the classes are separable by geometry)."""

import numpy as np


def toy_events(n: int, seed: int = 0, points: int = 1400):
    """Small synthetic 5-class events (straight tracks, Michel stubs, delta branches, shower blobs, scattered
    LED) built with `larpanda.data.pilarnet.event_from_labels`.
    Not physics: geometry makes the classes separable, so a model that learns anything scores high."""
    from larpanda.data.pilarnet import event_from_labels

    rng = np.random.default_rng(seed)
    events = []
    for _ in range(n):
        vox, lab, inst = [], [], []
        pid = 0
        origin = rng.integers(200, 560, 3)
        for _t in range(2):  # tracks with a Michel at the end and a delta ray branch
            d = rng.normal(size=3)
            d /= np.linalg.norm(d)
            L = rng.integers(120, 200)
            line = origin + np.outer(np.arange(L), d)
            vox.append(line); lab += [1] * L; inst += [pid] * L; pid += 1
            end = line[-1]
            d2 = rng.normal(size=3); d2 /= np.linalg.norm(d2)
            m = end + np.outer(np.arange(1, 25), d2)
            vox.append(m); lab += [2] * len(m); inst += [pid] * len(m); pid += 1
            mid = line[L // 2]
            d3 = rng.normal(size=3); d3 /= np.linalg.norm(d3)
            dl = mid + np.outer(np.arange(1, 10), d3)
            vox.append(dl); lab += [3] * len(dl); inst += [pid] * len(dl); pid += 1
        c = origin + rng.integers(-60, 60, 3)  # shower: a fat cone-like blob
        k = points // 2
        blob = c + rng.normal(scale=(6, 6, 18), size=(k, 3))
        vox.append(blob); lab += [0] * k; inst += [pid] * k; pid += 1
        led = origin + rng.integers(-120, 120, (60, 3))
        vox.append(led); lab += [4] * 60; inst += [-1] * 60
        v = np.clip(np.rint(np.concatenate(vox)), 0, 767).astype(np.int64)
        lab, inst = np.asarray(lab), np.asarray(inst)
        _, first = np.unique(v, axis=0, return_index=True)
        first = np.sort(first)
        v, lab, inst = v[first], lab[first], inst[first]
        energy = np.where(lab == 4, rng.uniform(0.14, 0.5, len(lab)), rng.uniform(0.5, 3.0, len(lab))).astype(np.float32)
        pids = np.where(lab == 1, 2, np.where(lab == 4, -1, 1))
        inter = np.where(inst >= 0, 0, -1)
        events.append(event_from_labels(v, energy, lab, pids, inst, inter))
    return events
