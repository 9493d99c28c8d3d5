"""A torch `Dataset` over PILArNet-M files with the reference loader semantics (docs/design.md §2.2).

* Files: explicit ``.h5`` paths, directories (``*.h5`` inside, sorted), or, with ``split``, the reference
  glob ``<root>/*{split}/*.h5`` (sorted), for every root given.
* Index: built from each file's ``<stem>_points.npy`` only (raw counts; no event is read). Events with
  fewer than ``min_points`` RAW points (before the energy cut) are not in the index at all, as in the
  reference (``argwhere(npoints >= min_points)``). ``max_events`` keeps the first qualifying events in
  sorted-file order (the reference ``max_len``).
* Energy cut ``E > energy_threshold`` (strict) at load time, inside the transform. If fewer than
  ``min_points`` points remain the event is KEPT (pimm behaviour, used by every training config); Panda's
  inference reader would take the next event instead, set ``after_cut_min_points=min_points`` to get that.
  An event with no point at all after the cut is always replaced by the next qualifying event (the model
  cannot take an empty event).
* Bad events: by default a malformed event raises `DataError` (file, event, field). With
  ``skip_bad_events=True`` it is logged (logger ``larpanda.data``), counted in ``self.skipped`` and in the
  item's ``skipped`` entry (so the count reaches the training log even from worker processes), and the next
  event is returned instead; a whole file that cannot be indexed (not HDF5, missing datasets, bad
  ``_points.npy``) is left out and listed in ``self.skipped_files``.
* HDF5 handles are opened lazily in the process that reads (each DataLoader worker opens its own; a
  handle inherited across ``fork`` is never used: files are reopened when the pid changes).
* Epoch-aware augmentation: the sampler below yields ``epoch * len(dataset) + i``; the item is event
  ``i`` and its augmentation RNG is seeded by ``(seed, epoch, i)``, so results do not depend on the number
  of workers.
"""

from __future__ import annotations

import glob
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from . import pilarnet
from .event import Event
from .point import Point, collate
from .transforms import ENERGY_THRESHOLD, prepare, prepare_batch

log = logging.getLogger("larpanda.data")


def find_files(paths, split: str | None = None) -> list[Path]:
    """Expand files / directories / split roots into a sorted list of ``.h5`` files."""
    out = []
    for p in pilarnet.as_path_list(paths):
        if p.is_dir():
            if split is not None:
                found = sorted(glob.glob(os.path.join(str(p), f"*{split}", "*.h5")))
                if not found and p.name.endswith(split):
                    found = sorted(glob.glob(os.path.join(str(p), "*.h5")))
            else:
                found = sorted(glob.glob(os.path.join(str(p), "*.h5")))
                if not found:
                    found = sorted(glob.glob(os.path.join(str(p), "**", "*.h5"), recursive=True))
            if not found:
                raise DataError(f"no .h5 files found{f' for split {split!r}' if split else ''}", path=p)
            out.extend(Path(f) for f in found)
        elif p.exists():
            out.append(p)
        else:
            raise DataError("no such file or directory", path=p)
    return out


class PILArNetDataset(torch.utils.data.Dataset):
    """Events of PILArNet-M files; item ``i`` is the dict of `transforms.prepare` plus ``file_index`` and
    ``event_index`` ((1,) int64: which file of ``self.files`` and which event in it).

    Args:
        paths: file(s) and/or directories.
        split: "train"/"val"/"test" (reference glob ``*{split}/*.h5``), or None.
        energy_threshold: strict cut in MeV (0.13, docs/design.md §6.1); None or 0 keeps every point > 0.
        min_points: minimum RAW point count (from ``_points.npy``) for an event to be indexed.
        max_events: keep at most this many qualifying events (sorted-file order).
        transform: ``f(event, energy_threshold=, augment=, rng=) -> dict`` (default `prepare`).
        augment: augmentation dict passed to the transform (None = eval).
        seed: base seed of the per-item augmentation RNG.
        skip_bad_events: log, count and replace malformed events instead of raising.
        after_cut_min_points: if set, events with fewer points after the cut are replaced by the next one.
        read_extra: read and check ``cluster_extra`` (momentum, vertex). Default True; `prepare` does not use
            it, so False saves one vlen read per run of events (a malformed cluster_extra then goes unnoticed).
    """

    def __init__(
        self,
        paths,
        split: str | None = None,
        energy_threshold: float | None = ENERGY_THRESHOLD,
        min_points: int = 1024,
        max_events: int | None = None,
        transform=prepare,
        augment: dict | None = None,
        seed: int = 0,
        skip_bad_events: bool = False,
        after_cut_min_points: int | None = None,
        read_extra: bool = True,
    ):
        self.files = find_files(paths, split)
        self.energy_threshold = energy_threshold
        self.min_points = int(min_points)
        self.transform = transform
        self.augment = augment
        self.seed = int(seed)
        self.skip_bad_events = bool(skip_bad_events)
        self.after_cut_min_points = after_cut_min_points
        self.read_extra = bool(read_extra)
        self.skipped: list[str] = []
        self.versions: list[int] = []
        rows, file_ids = [], []
        self.skipped_files: list[str] = []
        good = []
        for f in self.files:
            try:
                counts = pilarnet.read_points_index(f)
            except DataError as exc:
                if not self.skip_bad_events:
                    raise
                self.skipped_files.append(str(exc))
                log.warning("skipping unreadable file: %s", exc)
                continue
            good.append((f, counts))
        self.files = [f for f, _ in good]
        for k, (f, counts) in enumerate(good):
            keep = np.flatnonzero(counts >= self.min_points)
            rows.append(keep)
            file_ids.append(np.full(len(keep), k, np.int64))
        self.rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.file_ids = np.concatenate(file_ids) if file_ids else np.zeros(0, np.int64)
        if max_events is not None:
            self.rows, self.file_ids = self.rows[: int(max_events)], self.file_ids[: int(max_events)]
        self._handles: dict = {}
        self._versions: dict = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def subset(self, indices) -> "PILArNetDataset":
        """The same dataset restricted to ``indices`` (positions in this dataset, in the given order).

        Unlike `torch.utils.data.Subset`, the result is a `PILArNetDataset`: its items still take the
        epoch from the index (``epoch * len + i``), so a labelled subset gets a new augmentation every
        epoch. The augmentation RNG is keyed by the position in the subset."""
        import copy

        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"subset indices outside 0..{len(self) - 1}")
        sub = copy.copy(self)
        sub.rows, sub.file_ids = self.rows[idx], self.file_ids[idx]
        sub._handles, sub._versions, sub._pid = {}, {}, os.getpid()
        return sub

    # ---------------------------------------------------------------- file handles (per process)
    def _file(self, k: int):
        if self._pid != os.getpid():  # forked worker: never touch the parent's handles
            self._handles, self._versions, self._pid = {}, {}, os.getpid()
        h = self._handles.get(k)
        if h is None:
            f = pilarnet.open_h5(self.files[k])
            self._versions[k] = pilarnet.file_version(f, self.files[k])
            h = {name: f[name] for name in ("point", "cluster", "cluster_extra") if name in f}
            h["_file"] = f
            self._handles[k] = h
        return h, self._versions[k]

    def close(self) -> None:
        for h in self._handles.values():
            try:
                h["_file"].close()
            except Exception:  # noqa: BLE001
                pass
        self._handles, self._versions = {}, {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"], state["_versions"] = {}, {}
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # ---------------------------------------------------------------- reading
    def read_events(self, idx: list[int], return_packed: bool = False):
        """Raw `Event` objects for dataset indices (no cut, no transform); contiguous rows of one file are
        read with one h5py slice per dataset. Raises DataError for a malformed event. With
        ``return_packed`` also returns the concatenated tables when ``idx`` is one ascending run of one file
        (else None), for `transforms.prepare_batch`."""
        out: dict[int, Event] = {}
        packs = []
        idx = [int(i) for i in idx]
        order = sorted(set(idx), key=lambda i: (self.file_ids[i], self.rows[i]))
        j = 0
        while j < len(order):
            k, r0 = int(self.file_ids[order[j]]), int(self.rows[order[j]])
            e = j + 1
            while e < len(order) and self.file_ids[order[e]] == k and self.rows[order[e]] == r0 + (e - j):
                e += 1
            h, ver = self._file(k)
            point, cluster, extra = pilarnet.read_raw(h, r0, r0 + e - j, ver, self.read_extra)
            pts, cls, exs, pack = pilarnet.check_chunk(point, cluster, extra, ver, self.files[k], r0, packed=True)
            packs.append(pack)
            for m in range(e - j):
                out[order[j + m]] = Event(pts[m], cls[m], None if exs is None else exs[m], source=(str(self.files[k]), r0 + m))
            j = e
        events = [out[i] for i in idx]
        if return_packed:
            return events, (packs[0] if len(packs) == 1 and order == idx else None)
        return events

    def _item(self, i: int, epoch: int, event: Event | None = None, skipped: int = 0) -> dict:
        n = len(self)
        for attempt in range(n):
            j = (i + attempt) % n
            try:
                ev = event if (attempt == 0 and event is not None) else self.read_events([j])[0]
                rng = np.random.default_rng([self.seed, epoch, j]) if self.augment else None
                d = self.transform(ev, energy_threshold=self.energy_threshold, augment=self.augment, rng=rng)
                npts = len(d["coord"])
                if npts == 0 or (self.after_cut_min_points and npts < self.after_cut_min_points):
                    continue  # too few points after the cut: take the next event (Panda reader)
            except DataError as exc:
                if not self.skip_bad_events:
                    raise
                self.skipped.append(str(exc))
                skipped += 1
                log.warning("skipping bad event (%d skipped so far in this process): %s", len(self.skipped), exc)
                continue
            d["file_index"] = np.array([self.file_ids[j]], np.int64)
            d["event_index"] = np.array([self.rows[j]], np.int64)
            if self.skip_bad_events:
                d["skipped"] = np.array([skipped], np.int64)
            return d
        raise DataError(
            f"no event qualifies (min_points {self.min_points}, energy_threshold {self.energy_threshold})",
            path=self.files[0] if self.files else None,
        )

    def __getitem__(self, i):
        """``ds[i]`` -> one event's dict; ``ds[[i, j, ...]]`` -> a collated `Point` (see `get_batch`)."""
        n = len(self)
        if n == 0:
            raise IndexError("empty dataset")
        if isinstance(i, (list, tuple, np.ndarray)):
            return self.get_batch(i)
        epoch, i = divmod(int(i), n)
        return self._item(i, epoch)

    def get_batch(self, indices) -> Point:
        """A collated batch, equal to ``collate([self[i] for i in indices])`` but vectorized: one h5py slice
        per contiguous run of rows and `transforms.prepare_batch` (when the transform is `prepare`).
        Falls back to the per-item path for a custom transform, bad events, or too-small events."""
        n = len(self)
        pairs = [divmod(int(i), n) for i in indices]
        events = None
        if self.transform is prepare:
            try:
                events, packed = self.read_events([i for _, i in pairs], return_packed=True)
            except DataError:
                if not self.skip_bad_events:
                    raise
        if events is not None:
            rngs = [np.random.default_rng([self.seed, ep, i]) for ep, i in pairs] if self.augment else None
            batch = prepare_batch(events, self.energy_threshold, self.augment, rngs, packed=packed)
            counts = torch.diff(batch["offset"], prepend=batch["offset"].new_zeros(1))
            low = self.after_cut_min_points or 1
            if bool((counts >= low).all()):
                rows = [i for _, i in pairs]
                batch["file_index"] = torch.from_numpy(self.file_ids[rows].astype(np.int64))
                batch["event_index"] = torch.from_numpy(self.rows[rows].astype(np.int64))
                if self.skip_bad_events:
                    batch["skipped"] = torch.zeros(len(rows), dtype=torch.long)
                return batch
        return collate([self._item(i, ep) for ep, i in pairs])

    def __getitems__(self, indices) -> list[dict]:
        """Batched fetch (used by DataLoader): one h5py slice per contiguous run of rows."""
        n = len(self)
        pairs = [divmod(int(i), n) for i in indices]
        try:
            events = self.read_events([i for _, i in pairs])
        except DataError:
            events = [None] * len(pairs)  # isolate the bad event(s) one by one
        return [self._item(i, ep, ev) for (ep, i), ev in zip(pairs, events)]


class EventShardSampler(torch.utils.data.Sampler):
    """Shards dataset indices across DDP ranks; deterministic shuffle per epoch (call `set_epoch`).

    Every epoch draws one permutation from ``(seed, epoch)`` (identical on all ranks); rank ``r`` takes the
    ``r``-th of ``R`` contiguous shares of it. ``block > 1`` permutes runs of ``block`` consecutive events
    instead of single events (events in a file are independent simulations, so batches stay random, and a
    run is read with one h5py slice: ~1.6x faster in `larpanda.bench.loader`). With ``pad=True`` (training) the permutation is wrapped so every
    rank gets ``ceil(N / R)`` indices (a few events repeat); with ``pad=False`` (evaluation) every event is
    seen exactly once over all ranks. Yields ``epoch * N + i`` (see `PILArNetDataset`).
    """

    def __init__(self, dataset, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, pad: bool = True, drop_last: bool = False, block: int = 1):
        dist = torch.distributed
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.n = len(dataset) if not isinstance(dataset, int) else int(dataset)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.pad, self.drop_last = shuffle, int(seed), pad, drop_last
        self.block = max(1, int(block))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _indices(self) -> np.ndarray:
        idx = np.arange(self.n)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            if self.block > 1:  # shuffle runs of `block` consecutive events (one h5py slice per run)
                starts = rng.permutation(np.arange(0, self.n, self.block))
                idx = np.concatenate([np.arange(a, min(a + self.block, self.n)) for a in starts]) if self.n else idx
            else:
                idx = rng.permutation(self.n)
        R = self.num_replicas
        if self.drop_last:
            idx = idx[: (self.n // R) * R]
        elif self.pad and self.n % R and self.n:
            extra = R - self.n % R
            idx = np.concatenate([idx, np.resize(idx, extra)])
        return np.array_split(idx, R)[self.rank]  # contiguous share: keeps the runs together

    def __iter__(self):
        return iter((self._indices() + self.epoch * self.n).tolist())

    def __len__(self) -> int:
        R = self.num_replicas
        if self.drop_last:
            return self.n // R
        if self.pad:
            return math.ceil(self.n / R)
        return len(np.array_split(np.arange(self.n), R)[self.rank])


def _passthrough(batch):
    return batch


def _clean_worker_error(exc: DataError) -> DataError:
    """A DataError re-raised by a DataLoader worker carries the worker traceback as its message; recover
    the original one-line ``FILE event K: field: what`` so the CLI prints one clean line."""
    lines = str(exc).splitlines()
    for line in reversed(lines):
        _, sep, rest = line.partition("DataError: ")  # "larpanda.errors.DataError: <message>"
        if sep:
            return DataError(rest.strip())
    return DataError(lines[0] if lines else "DataLoader worker failed")


class _Loader(torch.utils.data.DataLoader):
    """DataLoader whose worker-side DataErrors come back as the original one-line message."""

    def __iter__(self):
        it = super().__iter__()
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except DataError as exc:
                if "\n" in str(exc):
                    raise _clean_worker_error(exc) from None
                raise
            yield batch


class _EpochBatchSampler(torch.utils.data.BatchSampler):
    """BatchSampler that forwards `set_epoch` to its `EventShardSampler`."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


def make_loader(dataset, batch_size: int, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, pad: bool | None = None, collate_fn=None, block: int = 1) -> torch.utils.data.DataLoader:
    """A DataLoader over an `EventShardSampler` (DDP-aware: ranks from torch.distributed when initialised)
    yielding packed `Point` batches (``offset`` = cumulative counts).

    With ``collate_fn=None`` and a `PILArNetDataset`, whole batches are fetched with
    `PILArNetDataset.get_batch` (vectorized; identical to per-item + `collate`). Otherwise items are fetched
    one by one and merged by ``collate_fn`` (default `collate`). Call ``loader.sampler.set_epoch(e)`` (batched
    mode: ``loader.batch_sampler.set_epoch(e)``; both work through `set_loader_epoch`) every epoch.
    """
    sampler = EventShardSampler(dataset, shuffle=shuffle, seed=seed, pad=shuffle if pad is None else pad, block=block)
    common = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
    if collate_fn is None and isinstance(dataset, PILArNetDataset):
        bs = _EpochBatchSampler(sampler, batch_size, drop_last)
        return _Loader(dataset, sampler=bs, batch_size=None, collate_fn=_passthrough, **common)
    return _Loader(
        dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn or collate, drop_last=drop_last, **common
    )


def set_loader_epoch(loader, epoch: int) -> None:
    """Set the shuffling epoch of a loader built by `make_loader` (either mode)."""
    for s in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        if s is not None and hasattr(s, "set_epoch"):
            s.set_epoch(epoch)
            return
