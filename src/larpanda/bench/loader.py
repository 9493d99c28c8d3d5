"""Data-loading throughput: read + energy cut + transforms (normalize, log, GridSample) + collate.

Measured on ONE core (``torch.set_num_threads(1)``, no DataLoader workers) on a generated v2 file of
~4.4k-raw-point events (about 3.4k above the 0.13 MeV cut, like PILArNet-M, docs/design.md §6.1), beside a naive
per-event h5py loop written the way the reference loader and Pointcept transforms do it, in the same
process. One row: events/s of both and the ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

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


def make_file(path, n_events: int = 2000, n_points: int = 4400, seed: int = 0):
    from ..data.pilarnet import write_events

    rng = np.random.default_rng(seed)
    write_events(path, [synthetic_event(rng, n_points) for _ in range(n_events)])
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
                mask = data["energy"][:, 0] > 0.13
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


def fast_loop(dataset, indices, batch_size: int):
    """Our path: `PILArNetDataset.get_batch` (one h5py slice per contiguous run, vectorized transforms,
    already collated), exactly what `make_loader` batches are made of."""
    n_points = 0
    for b in range(0, len(indices), batch_size):
        batch = dataset.get_batch(indices[b : b + batch_size])
        n_points += int(batch["offset"][-1])
    return n_points


def run(points=None, quick: bool = False, device: str = "cpu", n_events: int | None = None, batch_size: int = 16,
        workdir=None, shuffled: bool = False) -> list[dict]:
    """Measure events/s of our loader and of the naive baseline (same file, same process, one core)."""
    import torch

    from ..data.dataset import PILArNetDataset

    torch.set_num_threads(1)
    n_points = int(points[0]) if points else 4400
    n_events = n_events or (300 if quick else 2000)
    tmp = tempfile.TemporaryDirectory(prefix="larpanda-bench-") if workdir is None else None
    root = Path(workdir or tmp.name)
    try:
        path = root / "bench_test" / f"bench_{n_events}_{n_points}.h5"
        t0 = time.perf_counter()
        if not path.exists():
            make_file(path, n_events, n_points)
        t_make = time.perf_counter() - t0
        ds = PILArNetDataset(path, min_points=1)
        idx = list(range(len(ds)))
        reps = 1 if quick else 3
        fast, naive = [], []
        fast_loop(ds, idx[: batch_size * 4], batch_size)  # warm-up (opens the file)
        naive_loop(path, idx[: batch_size * 4], batch_size)
        for _ in range(reps):  # interleave so machine noise hits both
            t = time.perf_counter()
            pts = fast_loop(ds, idx, batch_size)
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            naive_loop(path, idx, batch_size)
            naive.append(time.perf_counter() - t)
        ds.close()
        f_eps, n_eps = len(idx) / min(fast), len(idx) / min(naive)
        rows = []
        if shuffled:  # training order: EventShardSampler with single-event or block shuffling
            from ..data.dataset import EventShardSampler

            for block in (1, batch_size):
                perm = list(EventShardSampler(len(idx), 1, 0, seed=0, block=block))
                fs, ns = [], []
                for _ in range(reps):
                    t = time.perf_counter()
                    fast_loop(ds, perm, batch_size)
                    fs.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    naive_loop(path, perm, batch_size)
                    ns.append(time.perf_counter() - t)
                rows.append({"what": f"same, shuffled order (EventShardSampler block={block})", "events": len(idx),
                             "batch_size": batch_size, "threads": 1, "events_per_s": round(len(idx) / min(fs), 1),
                             "baseline_events_per_s": round(len(idx) / min(ns), 1),
                             "ratio": round(min(ns) / min(fs), 2)})
        return [{
            "what": "read+cut+normalize+log+gridsample+collate",
            "events": len(idx),
            "raw_points_per_event": n_points,
            "points_per_event_after_cut": round(pts / len(idx), 1),
            "batch_size": batch_size,
            "threads": 1,
            "events_per_s": round(f_eps, 1),
            "baseline_events_per_s": round(n_eps, 1),
            "ratio": round(f_eps / n_eps, 2),
            "make_file_s": round(t_make, 2),
            "pid": os.getpid(),
        }] + rows
    finally:
        if tmp is not None:
            tmp.cleanup()
