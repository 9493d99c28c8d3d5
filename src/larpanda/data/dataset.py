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
* Epoch-aware augmentation: index ``epoch * len(dataset) + i`` (what `larpanda.train.data.SeededItems`
  asks for) is event ``i`` with its augmentation RNG seeded by ``(seed, epoch, i)``, so results do not
  depend on the number of workers, processes or the batch an event lands in.
* Batches: `get_batch` is the training path (`larpanda.train.data.batch_stream` with the default
  collate): one h5py read per file and table for the whole batch, one validation of the batch and the
  vectorized `transforms.prepare_batch`, equal to ``collate([ds[i] for i in indices])``.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..constants import ENERGY_THRESHOLD_MEV, MIN_RAW_POINTS
from ..errors import DataError
from . import pilarnet
from .checks import check_flat
from .event import Event
from .point import Point, collate
from .transforms import prepare, prepare_batch
from .vlen import RawVlen, VlenLayoutError, read_flat

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
        energy_threshold: float | None = ENERGY_THRESHOLD_MEV,
        min_points: int = MIN_RAW_POINTS,
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

    def raw_point_counts(self) -> np.ndarray:
        """(len,) int64: each event's points before the energy cut, from the files' point index (no event read)."""
        index = [pilarnet.read_points_index(f) for f in self.files]
        return np.array([index[k][r] for k, r in zip(self.file_ids, self.rows)], np.int64)

    # ---------------------------------------------------------------- file handles (per process)
    def _file(self, k: int):
        from h5py import h5t

        if self._pid != os.getpid():  # forked worker: never touch the parent's handles
            self._handles, self._versions, self._pid = {}, {}, os.getpid()
        h = self._handles.get(k)
        if h is None:
            f = pilarnet.open_h5(self.files[k])
            self._versions[k] = pilarnet.file_version(f, self.files[k])
            h = {name: f[name] for name in ("point", "cluster", "cluster_extra") if name in f}
            # for _read_h5py: dataset id, memory type, file dataspace (its selection is reset at every read)
            h["_lowlevel"] = {name: (d.id, h5t.py_create(d.dtype), d.id.get_space()) for name, d in h.items()}
            h["_raw"] = RawVlen.open(f, [name for name in h if not name.startswith("_")])  # None: h5py only
            h["_file"] = f
            self._handles[k] = h
        return h, self._versions[k]

    def close(self) -> None:
        for h in self._handles.values():
            try:
                if h.get("_raw") is not None:
                    h["_raw"].close()
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
    def read_events(self, idx: list[int]) -> list[Event]:
        """Raw `Event` objects for dataset indices (no cut, no transform); contiguous rows of one file are
        read with one h5py slice per dataset. Raises DataError for a malformed event."""
        out: dict[int, Event] = {}
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
            pts, cls, exs = pilarnet.check_chunk(point, cluster, extra, ver, self.files[k], r0)
            for m in range(e - j):
                out[order[j + m]] = Event(pts[m], cls[m], None if exs is None else exs[m], source=(str(self.files[k]), r0 + m))
            j = e
        return [out[i] for i in idx]

    def _read_batch(self, idx: list[int]):
        """The events at dataset indices ``idx`` in that order, for `transforms.prepare_batch`: the batch's
        elements of each table read straight into one array per table (`vlen.read_flat`; where a file's layout
        does not allow it, one h5py read of the listed rows per file and table) and one `checks.check_flat` of
        the whole batch. Returns (events, packed tables), or None when the batch must take the per-event path:
        a read or a check failed (the per-event path reports or skips the event), or files of two versions."""
        fids, rows = self.file_ids[idx], self.rows[idx]
        try:
            handles = {k: self._file(k) for k in np.unique(fids).tolist()}
            versions = {ver for _, ver in handles.values()}
            if len(versions) != 1:
                return None
            (ver,) = versions
            names = ("point", "cluster") + (("cluster_extra",) if ver == 2 and self.read_extra else ())
            tables = self._read_raw(handles, fids, rows, names) or self._read_h5py(handles, fids, rows, names)
            flat, lengths = zip(*(tables.get(name, (None, None)) for name in ("point", "cluster", "cluster_extra")))
            pts, cls, exs, packed = check_flat(flat, lengths, ver, packed=True)
        except (DataError, OSError, RuntimeError, ValueError, TypeError, KeyError):
            return None
        events = [Event(pts[m], cls[m], None if exs is None else exs[m], source=(str(self.files[k]), int(r)))
                  for m, (k, r) in enumerate(zip(fids.tolist(), rows.tolist()))]
        return events, packed

    def _read_raw(self, handles, fids, rows, names) -> dict | None:
        """{table: (the batch's elements concatenated, elements per event)} read by `vlen.read_flat`, or None
        when a file is not laid out for it (a file whose bytes disagree with its records once is read with
        h5py from then on, and so are the other files of that batch)."""
        readers = {k: h["_raw"] for k, (h, _) in handles.items()}
        if any(r is None for r in readers.values()):
            return None
        try:
            return {name: read_flat(readers, fids, rows, name) for name in names}
        except VlenLayoutError as exc:
            log.warning("reading with h5py from now on: %s", exc)
            for h, _ in handles.values():
                h["_raw"] = None
            return None

    @staticmethod
    def _read_h5py(handles, fids, rows, names) -> dict:
        """{table: (the batch's elements concatenated, elements per event)}: one h5py read of the listed rows
        per file and table (a point selection, in batch order)."""
        from h5py import h5s

        out = {}
        for name in names:
            table = np.empty(len(rows), object)
            for k, (h, _) in handles.items():
                at = np.flatnonzero(fids == k)
                dsid, mtype, space = h["_lowlevel"][name]
                space.select_elements(rows[at].astype(np.uint64).reshape(-1, 1))
                part = np.empty(len(at), object)
                dsid.read(h5s.create_simple((len(at),)), space, part, mtype)
                table[at] = part
            out[name] = (np.concatenate(list(table)), np.fromiter(map(len, table), np.int64, len(table)))
        return out

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
        """The collated batch of ``indices`` (``epoch * len + i`` as for ``self[...]``): equal to
        ``collate([self[i] for i in indices])`` (tested), vectorized when the transform is `prepare`
        (`_read_batch`, `transforms.prepare_batch`, augmentation RNGs keyed by (seed, epoch, i) as per item).
        A batch with a bad event, an event emptied by the cut (or below ``after_cut_min_points``) or a custom
        transform takes the per-event path, which raises, skips or replaces exactly as ``self[i]`` does."""
        n = len(self)
        pairs = [divmod(int(i), n) for i in indices]
        rows = [i for _, i in pairs]
        read = self._read_batch(rows) if self.transform is prepare and rows else None
        if read is not None:
            rngs = [np.random.default_rng([self.seed, ep, i]) for ep, i in pairs] if self.augment else None
            batch = prepare_batch(read[0], self.energy_threshold, self.augment, rngs, packed=read[1])
            counts = np.diff(batch["offset"].numpy(), prepend=0)
            if (counts >= (self.after_cut_min_points or 1)).all():
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

