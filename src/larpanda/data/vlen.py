"""Direct reads of the variable-length elements of contiguous 1-D HDF5 datasets (the training loader's I/O).

h5py reads a vlen element through HDF5's type conversion: the global-heap collection holding it is loaded
into the metadata cache, copied out, converted and wrapped in a new array, then concatenated with the rest
of the batch (2.3-4x the time of reading the bytes themselves; docs/benchmarks.md "Data loader"). Where a
file allows it, `RawVlen` reads the same bytes with one ``pread`` per element straight into the batch's
buffer:

* the dataset's contiguous storage (``dsid.get_offset()``) is an array of 16-byte records: sequence
  length (uint32), global-heap collection address (uint64), object index (uint32);
* a collection starts with ``GCOL``, version 1, its size; then objects: index (uint16), reference count
  (uint16), reserved (4 bytes), size (uint64), the data padded to 8 bytes (HDF5 file format spec III.E).

Only files that fit that description exactly are read this way (sec2 driver, 8-byte addresses and
lengths, no user block, contiguous allocated storage); `RawVlen.open` returns None for any other, and
`VlenLayoutError` from a read means the caller should fall back to h5py. Every element read is checked
against its record (collection signature, object found, size = length x item size).
"""

from __future__ import annotations

import os

import numpy as np

_RECORD = np.dtype([("length", "<u4"), ("collection", "<u8"), ("index", "<u4")])


class VlenLayoutError(Exception):
    """The file's bytes are not laid out as `RawVlen` expects: read this file with h5py instead."""


class RawVlen:
    """Byte-level reader of the named vlen datasets of one open h5py File (one per process: it holds a file
    descriptor). Records are read once per dataset, collection directories once per collection."""

    def __init__(self, fd: int, datasets: dict):
        self.fd = fd
        self._datasets = datasets  # name -> (storage offset, number of elements, base dtype)
        self._records: dict = {}
        self._objects: dict = {}  # collection address -> {object index: (data offset, size)}

    @classmethod
    def open(cls, f, names) -> "RawVlen | None":
        """A reader of datasets ``names`` of h5py File ``f``, or None where the layout is not the one above."""
        if not hasattr(os, "pread") or f.driver != "sec2":
            return None
        fcpl = f.id.get_create_plist()
        if fcpl.get_sizes() != (8, 8) or fcpl.get_userblock() != 0:
            return None
        datasets = {}
        for name in names:
            d = f[name]
            base = d.dtype.metadata.get("vlen") if d.dtype.metadata else None
            offset = d.id.get_offset()
            if base is None or np.dtype(base).kind not in "iuf" or offset is None or len(d.shape) != 1:
                return None
            if d.id.get_storage_size() != _RECORD.itemsize * d.shape[0]:
                return None
            datasets[name] = (int(offset), int(d.shape[0]), np.dtype(base))
        try:
            return cls(os.open(f.filename, os.O_RDONLY), datasets)
        except OSError:
            return None

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()

    def dtype(self, name: str) -> np.dtype:
        return self._datasets[name][2]

    def _read(self, size: int, offset: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise VlenLayoutError(f"short read at {offset}")
        return data

    def records(self, name: str) -> np.ndarray:
        """The dataset's (length, collection, index) records, read once."""
        rec = self._records.get(name)
        if rec is None:
            offset, n, _ = self._datasets[name]
            rec = self._records[name] = np.frombuffer(self._read(_RECORD.itemsize * n, offset), _RECORD)
        return rec

    def _collection(self, address: int) -> dict:
        objects = self._objects.get(address)
        if objects is not None:
            return objects
        head = self._read(16, address)
        if head[:4] != b"GCOL" or head[4] != 1:
            raise VlenLayoutError(f"no global heap collection at {address}")
        end, pos, objects = address + int.from_bytes(head[8:16], "little"), address + 16, {}
        while pos + 16 <= end:
            obj = self._read(16, pos)
            index, size = int.from_bytes(obj[0:2], "little"), int.from_bytes(obj[8:16], "little")
            if index == 0:  # the free-space object ends the collection's objects
                break
            objects[index] = (pos + 16, size)
            pos += 16 + (size + 7) // 8 * 8
        self._objects[address] = objects
        return objects

    def locate(self, name: str, rows) -> np.ndarray:
        """(file offset, bytes, elements) of each element ``rows`` (int64, (len(rows), 3)); checked."""
        rec = self.records(name)[np.asarray(rows, np.int64)]
        item = self._datasets[name][2].itemsize
        out = np.zeros((len(rec), 3), np.int64)
        for i, (length, address, index) in enumerate(rec.tolist()):
            if length == 0:
                continue
            found = self._collection(address).get(index)
            if found is None or found[1] != length * item:
                raise VlenLayoutError(f"{name}: heap object {address}/{index} missing or not {length} x {item} bytes")
            out[i] = (found[0], found[1], length)
        return out


def read_flat(readers, which, rows, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Elements ``rows[i]`` of dataset ``name`` in file ``readers[which[i]]`` (`RawVlen`s in a list or a dict
    by file number), concatenated in that order into one array of the base dtype, and the elements per row
    (int64). Raises VlenLayoutError."""
    which, rows = np.asarray(which, np.int64), np.asarray(rows, np.int64)
    loc = np.empty((len(rows), 3), np.int64)
    dtypes = set()
    for k in np.unique(which).tolist():
        at = np.flatnonzero(which == k)
        loc[at] = readers[k].locate(name, rows[at])
        dtypes.add(readers[k].dtype(name))
    if len(dtypes) > 1:
        raise VlenLayoutError(f"{name}: element types {sorted(map(str, dtypes))} differ between files")
    out = np.empty(int(loc[:, 2].sum()), dtypes.pop() if dtypes else np.float32)
    view, pos = memoryview(out.view(np.uint8)), 0
    for (offset, size, _), k in zip(loc.tolist(), which.tolist()):
        if size and os.preadv(readers[k].fd, [view[pos : pos + size]], offset) != size:
            raise VlenLayoutError(f"{name}: short read at {offset}")
        pos += size
    return out, loc[:, 2].copy()
