"""`Point`: a packed batch of point clouds, described by ``offset`` (cumulative point counts).

As in Pointcept/Sonata: every per-point tensor has shape (N_total, ...); ``offset`` has shape (B,) with
``offset[b]`` = number of points in events 0..b, and ``batch`` (N_total,) is the event index of each row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


class Point(dict):
    """A dict with attribute access. Canonical keys:

    ``coord`` (N,3) float normalized coordinates; ``grid_coord`` (N,3) int64; ``feat`` (N,C);
    ``offset`` (B,) int64; ``batch`` (N,) int64; ``index`` (N,) int64 row of each point in its event's
    voxel array (so predictions can be returned in event order); labels ``segment``, ``instance``, ...
    """

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None

    def ensure_batch(self) -> "Point":
        """Derive ``batch`` from ``offset`` or ``offset`` from ``batch`` if only one is present."""
        if "batch" not in self and "offset" in self:
            self["batch"] = offset2batch(self["offset"])
        elif "offset" not in self and "batch" in self:
            self["offset"] = batch2offset(self["batch"])
        return self

    @property
    def num_events(self) -> int:
        return int(self["offset"].shape[0])

    def to(self, device, non_blocking: bool = False) -> "Point":
        return Point({k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in self.items()})


def offset2bincount(offset: torch.Tensor) -> torch.Tensor:
    return torch.diff(offset, prepend=offset.new_zeros(1))


def offset2batch(offset: torch.Tensor) -> torch.Tensor:
    counts = offset2bincount(offset)
    return torch.repeat_interleave(torch.arange(len(counts), device=offset.device), counts)


def batch2offset(batch: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(torch.bincount(batch), dim=0).long()


def _to_tensor(v):
    if torch.is_tensor(v):
        return v
    if isinstance(v, np.ndarray):
        if v.dtype == np.float64:
            v = v.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(v))
    return None


def collate(samples: Sequence[Mapping]) -> Point:
    """Concatenate per-event dicts into one `Point`.

    Tensors/arrays are concatenated along dim 0; any key containing "offset" is rebuilt as the cumulative
    count over the batch (each sample's own offset is its count, or its own cumulative offsets);
    other values (names, scalars) become lists. If no offset key is given, ``offset`` is built from
    the length of ``coord``.
    """
    if len(samples) == 0:
        raise ValueError("collate: empty batch")
    out = Point()
    keys = list(samples[0].keys())
    for key in keys:
        values = [s[key] for s in samples]
        tensors = [_to_tensor(v) for v in values]
        if "offset" in key:
            parts, total = [], 0
            for t in tensors:
                t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
                parts.append(t + total)
                total += int(t[-1]) if len(t) else 0
            out[key] = torch.cat(parts)
        elif all(t is not None for t in tensors) and tensors[0].dim() > 0:
            out[key] = torch.cat(tensors, dim=0)
        else:
            out[key] = list(values)
    if "offset" not in out and "coord" in out:
        counts = torch.tensor([len(s["coord"]) for s in samples], dtype=torch.long)
        out["offset"] = torch.cumsum(counts, 0)
    return out.ensure_batch() if "offset" in out else out
