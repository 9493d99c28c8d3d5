"""Sonata views of one event (docs/model.md §2.1) and the batch-level masking of global views (docs/model.md §2.2).

`MultiViewGenerator` turns one prepared event (normalized, grid-sampled ``coord``, log ``energy``) into
2 global + 6 local kNN crops, each augmented on its own (CenterShift, rotate z/x/y p 0.8, flip x/y/z
p 0.5, jitter σ = grid/4), with the un-augmented ``origin_coord`` kept for matching. `ssl_transform`
is a `PILArNetDataset` transform producing those views; `collate_views` batches them;
`generate_mask` masks grid patches of the global views over the whole batch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..constants import ENERGY_THRESHOLD_MEV
from ..data import transforms as T
from ..data.point import collate, offset2batch

VIEW_AUGMENT = {k: v for k, v in T.AUGMENT_PRETRAIN.items() if k != "energy_jitter"}
ENERGY_JITTER = T.AUGMENT_PRETRAIN["energy_jitter"]  # sigma 0.05, clip 0.05, p 0.8, on log energy


class MultiViewGenerator:
    """2 global + 6 local kNN crops of one event (pimm ``MultiViewGenerator``, docs/model.md §2.1).

    A crop keeps the ``int(U(scale)·min(max_size, N))`` points nearest (Euclidean, normalized coords) to
    a center, ordered by distance. The major global view is centered on a uniformly random point; the
    other global views on random points of the major view; each local view on a major-view point not
    yet covered by earlier local views (the cover resets when full). Global views are cut from a copy
    whose energy got ONE shared multiplicative jitter; local views from the un-jittered event.
    """

    def __init__(self, global_view_num=2, global_view_scale=(0.4, 1.0), local_view_num=6, local_view_scale=(0.1, 0.4),
                 max_size=30000, energy_jitter=ENERGY_JITTER, view_augment=VIEW_AUGMENT):
        self.global_view_num, self.local_view_num = int(global_view_num), int(local_view_num)
        self.global_view_scale, self.local_view_scale = tuple(global_view_scale), tuple(local_view_scale)
        self.max_size = int(max_size)
        self.energy_jitter = energy_jitter
        self.view_augment = view_augment

    def crop(self, coord: np.ndarray, center: np.ndarray, scale, rng) -> np.ndarray:
        """Row indices of the kNN crop around ``center`` (ordered by distance)."""
        n = coord.shape[0]
        size = max(1, int(rng.uniform(*scale) * min(self.max_size, n)))
        d2 = np.sum(np.square(coord - center), axis=-1)
        if size < n:
            part = np.argpartition(d2, size - 1)[:size]
            return part[np.argsort(d2[part], kind="stable")]
        return np.argsort(d2, kind="stable")

    def __call__(self, coord: np.ndarray, energy: np.ndarray, rng: np.random.Generator) -> dict:
        """``coord`` (N,3) f32 normalized, ``energy`` (N,1) f32 log-scaled → dict of numpy arrays:
        ``{global,local}_{coord,origin_coord,energy,feat}`` concatenated over views and
        ``{global,local}_offset`` (views,) cumulative point counts."""
        coord = np.asarray(coord, np.float32)
        energy = np.asarray(energy, np.float32).reshape(-1, 1)
        jittered = T.multiplicative_jitter(energy, rng, **self.energy_jitter) if self.energy_jitter else energy
        major = self.crop(coord, coord[rng.integers(len(coord))], self.global_view_scale, rng)
        global_idx = [major] + [
            self.crop(coord, coord[major[rng.integers(len(major))]], self.global_view_scale, rng)
            for _ in range(self.global_view_num - 1)
        ]
        covered = np.zeros(len(major), bool)
        local_idx = []
        for _ in range(self.local_view_num):
            if covered.all():
                covered[:] = False
            free = np.flatnonzero(~covered)
            idx = self.crop(coord, coord[major[free[rng.integers(len(free))]]], self.local_view_scale, rng)
            local_idx.append(idx)
            covered |= np.isin(major, idx)
        out = {}
        for name, idxs, e in (("global", global_idx, jittered), ("local", local_idx, energy)):
            views = [self._view(coord[i], e[i], rng) for i in idxs]
            out[f"{name}_coord"] = np.concatenate([v[0] for v in views])
            out[f"{name}_origin_coord"] = np.concatenate([coord[i] for i in idxs])
            out[f"{name}_energy"] = np.concatenate([v[1] for v in views])
            out[f"{name}_feat"] = np.concatenate([out[f"{name}_coord"], out[f"{name}_energy"]], axis=1)
            out[f"{name}_offset"] = np.cumsum([len(i) for i in idxs]).astype(np.int64)
        return out

    def _view(self, coord, energy, rng):
        c, e = T.augment_coord_energy(coord.copy(), energy.copy(), self.view_augment, rng)
        return c.astype(np.float32), e.astype(np.float32)


class SSLTransform:
    """`PILArNetDataset` transform: `transforms.prepare` (cut, normalize, log energy, GridSample) then
    `MultiViewGenerator`. The dataset must be built with a non-empty ``augment`` so it passes an rng."""

    def __init__(self, **view_kwargs):
        self.views = MultiViewGenerator(**view_kwargs)

    def __call__(self, event, energy_threshold=ENERGY_THRESHOLD_MEV, augment=None, rng=None) -> dict:
        if rng is None:
            rng = np.random.default_rng()
        d = T.prepare(event, energy_threshold=energy_threshold)
        out = self.views(d["coord"], d["energy"], rng)
        out["coord"] = d["coord"]  # the un-cropped event (the dataset checks its size; not collated)
        return out


def collate_views(samples) -> dict:
    """Batch per-event view dicts: tensors concatenated, ``global_offset`` (2B,) ordered
    [s0v0, s0v1, s1v0, …] and ``local_offset`` (6B,) cumulative; ``num_events`` = B."""
    keys = [k for k in samples[0] if k.startswith(("global_", "local_"))]
    batch = collate([{k: s[k] for k in keys} for s in samples])
    out = {k: batch[k] for k in keys}
    out["num_events"] = len(samples)
    return out


@torch.no_grad()
def generate_mask(coord: torch.Tensor, offset: torch.Tensor, mask_size: float, mask_ratio: float, generator=None):
    """Mask ``int(P·mask_ratio)`` of the P grid patches (side ``mask_size``, per-view origin at the view's
    min corner) drawn over the WHOLE batch (docs/model.md §2.2). Returns (mask (N,) bool, patch id (N,))."""
    batch = offset2batch(offset)
    nv = int(offset.shape[0])
    mins = coord.new_full((nv, 3), float("inf")).scatter_reduce(0, batch[:, None].expand(-1, 3), coord, "amin")
    cell = torch.div(coord - mins[batch], mask_size, rounding_mode="floor").long()
    key = torch.cat([batch[:, None], cell], dim=1)
    _, patch = torch.unique(key, dim=0, sorted=True, return_inverse=True)
    num = int(patch.max()) + 1 if patch.numel() else 0
    perm = torch.randperm(num, device=coord.device, generator=generator)
    masked = perm[: int(num * mask_ratio)]
    return torch.isin(patch, masked), patch


@torch.no_grad()
def jitter_masked(coord: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Masked coordinates + clip(N(0, σ²), max = 2σ) (upper clip only, as the reference; σ = grid/2)."""
    out = coord.clone()
    if sigma:
        out[mask] += torch.clip(torch.randn_like(out[mask]) * sigma, max=2 * sigma)
    return out
