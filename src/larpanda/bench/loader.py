"""Data-loading throughput of the training path: read + checks + energy cut + transforms (normalize, log,
GridSample) + collate, as `larpanda.train.fit` gets it for a semantic or panoptic task.

Measured on ONE core (``torch.set_num_threads(1)``, no DataLoader workers) on a file of events written by
the simulator (`larpanda.sim`, ~3.7k points above the 0.13 MeV cut, like PILArNet-M; docs/design.md §6.1):
shuffled batches of 4 from `larpanda.train.data.batch_stream` with the default collate (docs/design.md §2.2),
beside a naive per-event h5py loop written the way the reference loader and Pointcept transforms do it, over
the same events in the same order, in the same process. One row: events/s of both and the ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV

GRID = 768


def synthetic_event(rng: np.random.Generator, n_points: int = 4400, n_particles: int = 8, led_fraction: float = 0.2):
    """A valid v2 `Event` of about ``n_points`` unique voxels: random-walk "tracks" plus scattered LED.

    Not physics (use ``larpanda simulate`` for that); shaped like PILArNet-M for I/O benchmarks and tests:
    ~20 % LED, ~23 % of voxels below 0.13 MeV, 2 interactions.
    """
    from ..data.pilarnet import event_from_labels

    n_led = int(n_points * led_fraction)
    n_trk = n_points - n_led
    per = np.diff(np.linspace(0, n_trk, n_particles + 1).astype(int))
    vox, part = [], []
    for k, m in enumerate(per):
        start = rng.integers(100, GRID - 100, 3)
        steps = rng.integers(-1, 2, (int(m) * 2, 3))
        walk = np.clip(start + np.cumsum(steps, 0), 0, GRID - 1)
        vox.append(walk)
        part.append(np.full(len(walk), k))
    vox.append(rng.integers(0, GRID, (n_led * 2, 3)))
    part.append(np.full(n_led * 2, -1))
    vox = np.concatenate(vox)
    part = np.concatenate(part)
    key = (vox[:, 0] * GRID + vox[:, 1]) * GRID + vox[:, 2]
    _, first = np.unique(key, return_index=True)
    first = np.sort(first)
    thing = first[part[first] >= 0][:n_trk]
    led = first[part[first] < 0][:n_led]
    sel = np.concatenate([thing, led])
    vox, part = vox[sel], part[sel]
    n = len(sel)
    energy = rng.lognormal(np.log(0.45), 1.4, n).astype(np.float32)
    is_led = part < 0
    energy[is_led] = rng.uniform(0.01, 0.3, is_led.sum()).astype(np.float32)
    motif = np.where(is_led, 4, part % 2).astype(np.int64)  # alternate shower / track
    pid = np.where(is_led, -1, np.where(motif == 1, 2 + part % 3, part % 2))
    inter = np.where(is_led, -1, part % 2)
    return event_from_labels(vox, energy, motif, pid, part, inter)


def make_file(path, n_events: int = 2000, seed: int = 0):
    """``n_events`` events of simulator stream ``seed`` (`larpanda.sim.generate_events`), written as v2."""
    from ..data.pilarnet import write_events
    from ..sim import generate_events

    write_events(path, generate_events(n_events, seed))
    return Path(path)


def naive_loop(path, indices, batch_size: int):
    """Reference-style loader: one h5py element read per dataset per event, per-event label expansion
    and id remapping, Pointcept-style GridSample (np.unique with inverse/counts), then collate."""
    import h5py
    import torch

    from ..data.point import collate
    from ..data.transforms import fnv_hash_vec

    n_batches = 0
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        for b in range(0, len(indices), batch_size):
            samples = []
            for i in indices[b : b + batch_size]:
                xyzE = f["point"][i].reshape(-1, 8)[:, :4]
                cl = f["cluster"][i].reshape(-1, 6)
                _ = f["cluster_extra"][i].reshape(-1, 5)
                size = cl[:, 0]
                group, inter, sem, pid = (np.repeat(cl[:, c], size) for c in (2, 3, 4, 5))
                pid = pid.copy()
                pid[pid == -1] = 5
                data = {"coord": xyzE[:, :3], "energy": xyzE[:, 3:4], "segment_motif": sem, "segment_pid": pid}
                for key, ids in (("instance_particle", group), ("instance_interaction", inter)):
                    out = np.full(ids.shape, -1)
                    m = ids >= 0
                    _, out[m] = np.unique(ids[m], return_inverse=True)
                    data[key] = out
                mask = data["energy"][:, 0] > ENERGY_THRESHOLD_MEV
                data = {k: v[mask] for k, v in data.items()}
                data["coord"] = (data["coord"] - np.array([384.0] * 3)) / (768 * np.sqrt(3) / 2)
                e = data["energy"]
                data["energy"] = 2 * (np.log10(e + 0.01) - np.log10(0.01)) / (np.log10(20.01) - np.log10(0.01)) - 1
                scaled = data["coord"] / np.array(0.001)
                grid = np.floor(scaled).astype(int)
                grid -= grid.min(0)
                key = fnv_hash_vec(grid)
                idx_sort = np.argsort(key)
                _, inverse, count = np.unique(key[idx_sort], return_inverse=True, return_counts=True)
                sel = np.cumsum(np.insert(count, 0, 0)[0:-1]) + np.random.randint(0, count.max(), count.size) % count
                keep = idx_sort[sel]
                data = {k: v[keep] for k, v in data.items()}
                data["grid_coord"] = grid[keep]
                data["feat"] = np.concatenate([data["coord"], data["energy"]], 1).astype(np.float32)
                samples.append({k: torch.as_tensor(v) for k, v in data.items()})
            collate(samples)
            n_batches += 1
    return n_batches


def training_loop(dataset, n_batches: int, batch_size: int, seed: int, epoch: int) -> int:
    """What `larpanda.train.fit` iterates for a semantic or panoptic task: ``n_batches`` batches of epoch
    ``epoch`` from `larpanda.train.data.batch_stream` with the default `collate` (shuffled, one process, no
    workers). Returns the number of points seen."""
    import itertools

    from ..data.point import collate
    from ..train.data import batch_stream

    stream = batch_stream(dataset, batch_size, seed, epoch * (len(dataset) // batch_size), collate)
    n_points = 0
    for ep, batch in itertools.islice(stream, n_batches):
        assert ep == epoch
        n_points += int(batch["offset"][-1])
    return n_points


def _measure(path, n_batches, batch_size, seed, reps, augment=None):
    """Best-of-``reps`` seconds of an epoch of training batches and of the naive loop over the same events
    in the same order (interleaved, so machine noise hits both), and the points per event after the cut."""
    from ..data.dataset import PILArNetDataset
    from ..train.data import epoch_order

    ds = PILArNetDataset(path, augment=augment, seed=seed)  # training defaults: 0.13 MeV cut, >= 1024 raw points
    training_loop(ds, 4, batch_size, seed, 0)  # warm-up (opens the file)
    naive_loop(path, ds.rows[:4 * batch_size].tolist(), batch_size)
    fast, naive = [], []
    for rep in range(reps):
        order = epoch_order(len(ds), seed, rep, True)[: n_batches * batch_size]
        t = time.perf_counter()
        pts = training_loop(ds, n_batches, batch_size, seed, rep)
        fast.append(time.perf_counter() - t)
        rows = ds.rows[order.numpy()].tolist()  # dataset index -> event of the (one) file
        t = time.perf_counter()
        naive_loop(path, rows, batch_size)
        naive.append(time.perf_counter() - t)
    ds.close()
    return min(fast), min(naive), pts / (n_batches * batch_size)


def run(points=None, quick: bool = False, device: str = "cpu", n_events: int | None = None, batch_size: int = 4,
        workdir=None, seed: int = 0, augmented: bool | None = None) -> list[dict]:
    """Events/s of the training data path and of the naive baseline, same file, same process, one core.

    ``points`` is ignored (the simulator sets the event sizes). The file (``n_events`` simulated events,
    stream ``seed``) is written to ``workdir`` and reused from there when given. ``augmented`` (default:
    not with ``quick``) adds a row with the semantic/panoptic training augmentation (rotate, flip), which
    the naive loop does not do."""
    import torch

    from ..data.dataset import PILArNetDataset
    from ..data.transforms import AUGMENT_DOWNSTREAM

    torch.set_num_threads(1)
    n_events = n_events or (300 if quick else 2000)
    reps = 1 if quick else 3
    tmp = tempfile.TemporaryDirectory(prefix="larpanda-bench-") if workdir is None else None
    root = Path(workdir or tmp.name)
    try:
        path = root / "bench_loader" / f"sim_{n_events}_seed{seed}.h5"
        t0 = time.perf_counter()
        if not path.exists():
            make_file(path, n_events, seed)
        t_make = time.perf_counter() - t0
        n_used = len(PILArNetDataset(path))
        n_batches = n_used // batch_size
        rows = []
        for aug in [None] + ([AUGMENT_DOWNSTREAM] if (not quick if augmented is None else augmented) else []):
            fast, naive, pts = _measure(path, n_batches, batch_size, seed, reps, aug)
            rows.append({
                "what": "training batches (train.data.batch_stream, default collate): read+check+cut+normalize+log"
                        "+gridsample+collate" + (", + rotate/flip augmentation (not in the baseline)" if aug else ""),
                "events": n_batches * batch_size,
                "events_in_file": n_events,
                "points_per_event_after_cut": round(pts, 1),
                "batch_size": batch_size,
                "threads": 1,
                "events_per_s": round(n_batches * batch_size / fast, 1),
                "baseline_events_per_s": round(n_batches * batch_size / naive, 1),
                "ratio": round(naive / fast, 2),
                "make_file_s": round(t_make, 2),
                "pid": os.getpid(),
            })
        return rows
    finally:
        if tmp is not None:
            tmp.cleanup()
