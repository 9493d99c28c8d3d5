"""The training data stream: which events each optimizer step sees, and with which augmentation.

The data order is a pure function of (seed, epoch): every epoch is one seeded permutation, cut into global
batches; rank r of W takes the r-th slice of each, so W processes with batch B see exactly the events one
process with batch B·W sees. Each item is computed under RNGs seeded by (seed, epoch, index), so
augmentations do not depend on workers, ranks or where a run was resumed. With the default collate a
`PILArNetDataset` batch is built whole by `PILArNetDataset.get_batch` (vectorized, equal to the per-item
dicts collated); a task with its own ``collate_fn`` (SSL views) gets the per-item dicts (docs/design.md §2.2).
"""

from __future__ import annotations

import contextlib
import random
import zlib

import numpy as np
import torch

from ..errors import DataError


@contextlib.contextmanager
def seeded(*key):
    """Run with python/numpy/torch RNGs seeded from ``key`` and restore the caller's states after."""
    seed = zlib.crc32(repr(key).encode())
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield seed
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SeededItems(torch.utils.data.Dataset):
    """Item ``(epoch, i)`` is ``dataset[i]`` computed under RNGs seeded by (seed, epoch, i). A
    `PILArNetDataset` (which seeds its own per-item augmentation RNG from the epoch encoded in the index)
    gets ``epoch·len + i``, so every epoch draws a new augmentation of each event. With ``batched`` (and a
    `PILArNetDataset`), ``__getitems__`` returns the collated batch (`PILArNetDataset.get_batch`), equal to
    `collate` of the per-item dicts."""

    def __init__(self, dataset, seed: int, batched: bool = False):
        from ..data.dataset import PILArNetDataset
        from ..data.transforms import prepare

        self.dataset, self.seed = dataset, int(seed)
        self.epoch_in_index = isinstance(dataset, PILArNetDataset)
        # whole collated batches from get_batch; `prepare` draws from explicit per-event generators
        # keyed by (seed, epoch, i), so the global RNGs need no seeding around it
        self.batched = bool(batched) and self.epoch_in_index
        self.global_rngs = not (self.batched and dataset.transform is prepare)

    def __len__(self):
        return len(self.dataset)

    def _key(self, epoch, i):
        return epoch * len(self.dataset) + i if self.epoch_in_index else i

    def __getitem__(self, key):
        epoch, i = key
        with seeded(self.seed, epoch, i):
            return self.dataset[self._key(epoch, i)]

    def __getitems__(self, keys):
        if self.batched:
            idx = [self._key(e, i) for e, i in keys]
            if not self.global_rngs:
                return self.dataset.get_batch(idx)
            with seeded(self.seed, *keys[0]):
                return self.dataset.get_batch(idx)
        if self.epoch_in_index:
            with seeded(self.seed, *keys[0]):
                return self.dataset.__getitems__([self._key(e, i) for e, i in keys])
        return [self[k] for k in keys]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


class ShardedBatches(torch.utils.data.Sampler):
    """Batches of ``(epoch, index)`` for this rank, starting at batch ``start`` of ``epoch``.

    Global batch j of an epoch = ``order[j·B·W : (j+1)·B·W]``; rank r takes the r-th slice of B (the last
    partial global batch is dropped)."""

    def __init__(self, n: int, batch_size: int, seed: int, epoch: int, start: int = 0, shuffle=True, rank=0, world=1):
        self.n, self.b, self.seed, self.epoch, self.start = n, batch_size, seed, epoch, start
        self.shuffle, self.rank, self.world = shuffle, rank, world

    @staticmethod
    def batches_per_epoch(n, batch_size, world) -> int:
        return n // (batch_size * world)

    def __len__(self):
        return self.batches_per_epoch(self.n, self.b, self.world) - self.start

    def __iter__(self):
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle).tolist()
        gb = self.b * self.world
        for j in range(self.start, self.batches_per_epoch(self.n, self.b, self.world)):
            lo = j * gb + self.rank * self.b
            yield [(self.epoch, i) for i in order[lo : lo + self.b]]


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


def _worker_init(worker_id):  # workers' own global RNGs (items are re-seeded anyway)
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def batch_stream(dataset, batch_size: int, seed: int, start_micro: int, collate_fn, *, shuffle: bool = True,
                 num_workers: int = 0, rank: int = 0, world: int = 1, pin_memory: bool = False):
    """Endless ``(epoch, batch)`` stream of this rank, starting at micro-batch ``start_micro`` of the run.

    With ``collate_fn`` None or `data.point.collate` (semantic, panoptic) a `PILArNetDataset`'s batches are
    built whole by `PILArNetDataset.get_batch`; any other ``collate_fn`` (SSL) gets the per-item dicts."""
    from ..data.point import collate

    collate_fn = collate_fn or collate
    items = SeededItems(dataset, seed, batched=collate_fn is collate)
    if items.batched:
        collate_fn = _passthrough
    n = len(dataset)
    nb = ShardedBatches.batches_per_epoch(n, batch_size, world)
    m = start_micro
    while True:
        epoch, start = divmod(m, nb)
        sampler = ShardedBatches(n, batch_size, seed, epoch, start, shuffle, rank, world)
        for b in _epoch_batches(items, sampler, collate_fn, num_workers, pin_memory, seed * 7919 + epoch):
            yield epoch, b
        m = (epoch + 1) * nb


def _epoch_batches(items, sampler, collate_fn, num_workers: int, pin_memory: bool, loader_seed: int):
    """The batches of ``sampler``: in this process, what a DataLoader without workers does (without its
    per-batch overhead); else through a DataLoader, a `DataError` raised in a worker coming back as its
    original one-line message."""
    if num_workers == 0 and not pin_memory:
        for keys in sampler:
            yield collate_fn(items.__getitems__(keys))
        return
    loader = torch.utils.data.DataLoader(
        items, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None,
        generator=torch.Generator().manual_seed(loader_seed), persistent_workers=False, pin_memory=pin_memory,
    )
    it = iter(loader)
    while True:
        try:
            b = next(it)
        except StopIteration:
            return
        except DataError as exc:
            if "\n" in str(exc):
                raise _clean_worker_error(exc) from None
            raise
        yield b


def num_events(batch) -> int:
    """Events in a collated batch (its ``num_events`` entry or the length of ``offset``)."""
    if isinstance(batch, dict):
        if "num_events" in batch:
            v = batch["num_events"]
            return int(v if not isinstance(v, list) else len(v))
        if "offset" in batch:
            return int(len(batch["offset"]))
    return 0


def to_device(batch, device):
    if hasattr(batch, "to") and not torch.is_tensor(batch) and isinstance(batch, dict):
        return batch.to(device)
    if isinstance(batch, dict):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})
    if torch.is_tensor(batch):
        return batch.to(device)
    return batch
