"""Test-time augmentation by the symmetries of the voxel cube (a larpanda addition, docs/design.md §6.3).

A semantic model run with ``tta = n`` sees each batch under the first ``n`` of the 48 symmetries of the voxel
cube (`SYMMETRIES`: an axis permutation and mirror flips, the `lattice` training augmentation of
`larpanda.data.transforms.lattice_symmetry` with fixed draws) and returns the mean of the logits. A symmetry
moves no voxel off the lattice and keeps every row in place, so the n outputs line up row by row. Pointcept's
semantic tester votes over augmented copies in the same way (its ``aug_transform``); the official Panda
evaluation does not, so ``tta`` is off (1) by default.
"""

from __future__ import annotations

import itertools

import torch

from ..data.event import GRID_SIZE_VOXELS
from ..data.point import Point

_FLIPS = [tuple(bool(b) for b in bits) for bits in itertools.product((0, 1), repeat=3)]
# identity first, then the 7 mirror flips, then each other axis permutation with its 8 flips: 48 in all
SYMMETRIES = [(perm, flip) for perm in itertools.permutations(range(3)) for flip in _FLIPS]


def apply_symmetry(point: Point, perm, flip) -> Point:
    """A shallow copy of the batch ``point`` with its geometry moved by one cube symmetry.

    ``perm`` (3,) axis order, ``flip`` (3,) bools, applied after the permutation: ``coord`` and the coordinate
    columns of ``feat`` are negated, ``grid_coord`` becomes ``max − g`` per event (as in training) and
    ``voxel_coord`` ``767 − v``. Energies, labels and row order are unchanged."""
    point.ensure_batch()
    out = Point(point)
    perm = list(perm)
    sign = torch.tensor([-1.0 if f else 1.0 for f in flip])
    flipped = torch.tensor(flip)
    for key in ("coord", "feat"):
        if key in out:
            x = out[key].clone()
            x[:, :3] = x[:, perm] * sign.to(x.device, x.dtype)
            out[key] = x
    if "voxel_coord" in out:
        v = out["voxel_coord"][:, perm]
        out["voxel_coord"] = torch.where(flipped.to(v.device), GRID_SIZE_VOXELS - 1 - v, v)
    if "grid_coord" in out:
        g = out["grid_coord"][:, perm]
        batch = out["batch"].long()
        top = torch.zeros((out.num_events, 3), dtype=g.dtype, device=g.device)
        top = top.scatter_reduce(0, batch[:, None].expand(-1, 3), g, reduce="amax", include_self=False)
        out["grid_coord"] = torch.where(flipped.to(g.device), top[batch] - g, g)
    return out


def _check_count(n: int) -> None:
    if not 1 <= int(n) <= len(SYMMETRIES):
        raise ValueError(f"tta must be between 1 and {len(SYMMETRIES)}, got {n}")


def tta_logits(logits_fn, point: Point, n: int) -> torch.Tensor:
    """Mean of ``logits_fn(p)`` (N, K) over the batch moved by the first ``n`` `SYMMETRIES` (1 ≤ n ≤ 48)."""
    _check_count(n)
    total = None
    for perm, flip in SYMMETRIES[: int(n)]:
        z = logits_fn(apply_symmetry(point, perm, flip)).float()
        total = z if total is None else total + z
    return total / int(n)


def set_tta(model, n: int, weights) -> None:
    """``--tta n`` of `larpanda evaluate` / `larpanda predict`: a clear error unless 1 ≤ n ≤ 48 and, for
    n > 1, ``model`` is a semantic model."""
    from ..errors import UserError

    try:
        _check_count(n)
    except ValueError as exc:
        raise UserError(f"--{exc}") from None
    if int(n) > 1 and model.config.get("task") != "semantic":
        raise UserError(f"--tta averages semantic logits; {weights} are {model.config.get('task')} weights")
    if hasattr(model, "tta"):
        model.tta = int(n)
