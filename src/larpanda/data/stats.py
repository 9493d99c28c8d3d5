"""Per-event statistics of PILArNet-M events: one implementation for ``larpanda info`` (`file_stats`) and the
simulator's validation (`larpanda.sim.stats.summarize`, which adds its physics figures on top).

`EventCounts` counts, event by event, the points before and after the energy cut (docs/design.md §6.1),
the particles and interactions, and the points per semantic class (raw and after the cut) and per PID
class (after the cut).
"""

from __future__ import annotations

import numpy as np

from ..constants import ENERGY_THRESHOLD_MEV, MIN_RAW_POINTS, NUM_SEMANTIC_CLASSES, PID_CLASSES, SEMANTIC_CLASSES


class EventCounts:
    """Running counts over events; ``add(event)`` for each.

    Attributes:
        raw, after_cut: points per event before / after the cut E > ``energy_threshold`` (MeV, compared in
            float32 as stored).
        particles, interactions: per event.
        motif_raw, motif_after_cut: points per semantic class (``NUM_SEMANTIC_CLASSES``,) int64.
        pid_after_cut: points per PID class after the cut (``len(PID_CLASSES)``,) int64.
    """

    def __init__(self, energy_threshold: float = ENERGY_THRESHOLD_MEV):
        self.energy_threshold = energy_threshold
        self.raw: list[int] = []
        self.after_cut: list[int] = []
        self.particles: list[int] = []
        self.interactions: list[int] = []
        self.motif_raw = np.zeros(NUM_SEMANTIC_CLASSES, np.int64)
        self.motif_after_cut = np.zeros(NUM_SEMANTIC_CLASSES, np.int64)
        self.pid_after_cut = np.zeros(len(PID_CLASSES), np.int64)

    def add(self, ev) -> np.ndarray:
        """Count one `Event`; returns its (N,) mask of the points above the cut."""
        keep = ev.energy > np.float32(self.energy_threshold)
        motif = ev.segment_motif
        self.raw.append(len(ev))
        self.after_cut.append(int(keep.sum()))
        self.particles.append(ev.num_particles)
        self.interactions.append(ev.num_interactions)
        self.motif_raw += np.bincount(motif, minlength=NUM_SEMANTIC_CLASSES)[:NUM_SEMANTIC_CLASSES]
        self.motif_after_cut += np.bincount(motif[keep], minlength=NUM_SEMANTIC_CLASSES)[:NUM_SEMANTIC_CLASSES]
        self.pid_after_cut += np.bincount(ev.segment_pid[keep], minlength=len(PID_CLASSES))[: len(PID_CLASSES)]
        return keep


def fractions(counts, names) -> dict:
    """``{name: count / total}`` (0.0 for every name when the total is 0)."""
    tot = counts.sum()
    return {name: (float(c) / tot if tot else 0.0) for name, c in zip(names, counts)}


def quantiles(x) -> dict:
    """mean, median, p05, p95, min, max of ``x`` as floats (all None when ``x`` is empty)."""
    if len(x) == 0:
        return {"mean": None, "median": None, "p05": None, "p95": None, "min": None, "max": None}
    x = np.asarray(x, dtype=float)
    q = np.quantile(x, [0.05, 0.5, 0.95])
    return {"mean": float(x.mean()), "median": float(q[1]), "p05": float(q[0]), "p95": float(q[2]),
            "min": float(x.min()), "max": float(x.max())}


def _file_events(path, n: int, skip_bad_events: bool, skipped: list):
    """The events of ``path`` chunk by chunk; with ``skip_bad_events`` a chunk with a malformed event is read
    again event by event and each bad event's message goes to ``skipped``."""
    from ..errors import DataError
    from . import pilarnet

    for a in range(0, n, pilarnet.READ_CHUNK):
        b = min(a + pilarnet.READ_CHUNK, n)
        try:
            yield from pilarnet.read_events(path, a, b)
        except DataError:
            if not skip_bad_events:
                raise
            for k in range(a, b):  # isolate the bad event(s)
                try:
                    yield from pilarnet.read_events(path, k, k + 1)
                except DataError as exc:
                    skipped.append(str(exc))


def file_stats(path, energy_threshold: float = ENERGY_THRESHOLD_MEV, skip_bad_events: bool = False) -> dict:
    """Statistics of one file as a JSON-able dict (fractions 0..1), for ``larpanda info``. Raises DataError
    on bad events unless ``skip_bad_events`` (then ``skipped`` lists their messages)."""
    from . import pilarnet

    n = pilarnet.num_events(path)
    if pilarnet.points_path(path).exists():
        pilarnet.read_points_index(path, build=False)  # a stale/corrupt _points.npy would break the loader
    with pilarnet.open_h5(path) as f:
        version = pilarnet.file_version(f, path)
    counts, skipped = EventCounts(energy_threshold), []
    for ev in _file_events(path, n, skip_bad_events, skipped):
        counts.add(ev)
    raw = counts.raw
    return {
        "file": str(path),
        "version": version,
        "events": n,
        "events_read": len(raw),
        "skipped_events": len(skipped),
        "skipped": skipped,
        "energy_threshold_mev": energy_threshold,
        "points_per_event_raw": quantiles(raw),
        "points_per_event_after_cut": quantiles(counts.after_cut),
        "events_with_1024_raw_points": int(np.sum(np.asarray(raw) >= MIN_RAW_POINTS)) if raw else 0,
        "semantic_fraction_raw": fractions(counts.motif_raw, SEMANTIC_CLASSES),
        "semantic_fraction_after_cut": fractions(counts.motif_after_cut, SEMANTIC_CLASSES),
        "pid_fraction_after_cut": fractions(counts.pid_after_cut, PID_CLASSES),
        "particles_per_event": quantiles(counts.particles),
        "interactions_per_event": quantiles(counts.interactions),
    }
