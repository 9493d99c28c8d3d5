"""Space-filling-curve serialization of voxel grids (docs/model.md §1.4).

Orders: ``"z"`` (Morton), ``"z-trans"`` (Morton of columns [1,0,2]), ``"hilbert"`` (Skilling's
transpose routine exactly as Pointcept/pimm ``hilbert.py::encode``), ``"hilbert-trans"``.

All routines are vectorized integer ops over N points (int64), no lookup tables:

* Morton: bit i of x goes to code bit 3i+2, y to 3i+1, z to 3i (the bits are spread by five shift-and-mask
  steps, not one step per bit).
* Hilbert: the reference operates on a (N, 3, depth) bit array, MSB first; for bit b (MSB first) and
  dim d: m = bit b of dim d; where m, dim 0's lower bits are inverted; where not m, the lower bits of
  dim 0 and dim d are exchanged. The bits are then interleaved MSB first as (d0, d1, d2) per level
  (the Morton layout) and converted from Gray code to binary by a prefix XOR (MSB first). Working on
  int64 words with Q = 1 << (depth-1-b) and P = Q-1 is the same computation.

Batching (differs from the official code on purpose, see docs/model.md §1.10): the depth
``bit_length(max grid_coord + 1)`` is computed PER EVENT, so an event's code is independent of the
batch; batch ids go above bit ``3 * max_depth`` so that sorting keeps events contiguous. For a single
event this equals the official code bit for bit. A batch is still encoded in one pass: the Morton and Hilbert
routines take one depth per point.
"""

from __future__ import annotations

import torch

ORDERS = ("z", "z-trans", "hilbert", "hilbert-trans")


# (shift, mask) steps that move bit i of a 21-bit integer to bit 3i (the "magic numbers" bit interleave)
_SPREAD3_STEPS = ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                  (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249))


def _spread3(v: torch.Tensor, depth) -> torch.Tensor:
    """Put bit i of ``v`` (int64) at bit 3i, for i < depth (<= 21; an int or (N,) per-point depths)."""
    v = v & ((1 << depth) - 1)
    for shift, mask in _SPREAD3_STEPS:
        v = (v | (v << shift)) & mask
    return v


def _compact3(code: torch.Tensor, depth: int) -> torch.Tensor:
    """Inverse of `_spread3`: gather bits 3i of ``code`` into bit i."""
    out = torch.zeros_like(code)
    for i in range(depth):
        out |= ((code >> (3 * i)) & 1) << i
    return out


def z_encode(grid: torch.Tensor, depth) -> torch.Tensor:
    """Morton code of (N,3) int64 grid coordinates with ``depth`` bits per axis (an int or (N,) per-point
    depths) -> (N,) int64."""
    g = grid.long()
    return (_spread3(g[:, 0], depth) << 2) | (_spread3(g[:, 1], depth) << 1) | _spread3(g[:, 2], depth)


def z_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    """(N,) Morton code -> (N,3) int64 grid coordinates."""
    return torch.stack([_compact3(code >> 2, depth), _compact3(code >> 1, depth), _compact3(code, depth)], 1)


def _gray_to_binary(g: torch.Tensor) -> torch.Tensor:
    """Prefix XOR from the MSB: binary bit k = XOR of gray bits >= k (codes < 2^63)."""
    b = g.clone()
    for s in (1, 2, 4, 8, 16, 32):
        b ^= b >> s
    return b


def hilbert_encode(grid: torch.Tensor, depth) -> torch.Tensor:
    """Hilbert code (Pointcept/pimm orientation) of (N,3) grid coordinates, ``depth`` bits -> (N,) int64.

    ``depth``: an int, or an (N,) int64 tensor of per-point depths (the events of a batch, each at its own
    depth: every point gets the code it has encoded alone at its depth)."""
    per_point = torch.is_tensor(depth)
    dmax = (int(depth.max()) if depth.numel() else 0) if per_point else depth
    mask = (1 << depth) - 1
    x = [grid[:, d].long() & mask for d in range(3)]
    for bit in range(dmax - 1):  # the last bit (q = 1) has no lower bits to transform
        if per_point:
            # q = 0 (so p = 0) leaves a point alone: its depth has no bit left with lower bits below it
            shift = depth - 1 - bit
            q = torch.where(shift > 0, torch.ones_like(depth) << shift.clamp(min=0), 0)
            p = (q - 1).clamp(min=0)
        else:
            q = 1 << (depth - 1 - bit)
            p = q - 1
        for d in range(3):
            m = (x[d] & q) != 0
            x[0] = torch.where(m, x[0] ^ p, x[0])
            if d == 0:
                continue  # exchanging dim 0 with itself is a no-op
            t = torch.where(m, torch.zeros_like(x[0]), (x[0] ^ x[d]) & p)
            x[d] = x[d] ^ t
            x[0] = x[0] ^ t
    gray = z_encode(torch.stack(x, 1), depth)
    return _gray_to_binary(gray)


def hilbert_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    """Inverse of `hilbert_encode` -> (N,3) int64. Each (bit, dim) step is an involution, so the steps
    are undone in reverse order."""
    gray = code ^ (code >> 1)
    g = z_decode(gray, depth)
    x = [g[:, d] for d in range(3)]
    for bit in reversed(range(depth)):
        q = 1 << (depth - 1 - bit)
        p = q - 1
        if p == 0:
            continue
        for d in (2, 1, 0):
            if d != 0:
                m = (x[d] & q) != 0
                t = torch.where(m, torch.zeros_like(x[0]), (x[0] ^ x[d]) & p)
                x[d] = x[d] ^ t
                x[0] = x[0] ^ t
            m = (x[d] & q) != 0
            x[0] = torch.where(m, x[0] ^ p, x[0])
    return torch.stack(x, 1)


def encode(grid: torch.Tensor, depth, order: str) -> torch.Tensor:
    """Code of one order name (no batch bits); ``depth`` an int or (N,) per-point depths."""
    if order == "z":
        return z_encode(grid, depth)
    if order == "z-trans":
        return z_encode(grid[:, [1, 0, 2]], depth)
    if order == "hilbert":
        return hilbert_encode(grid, depth)
    if order == "hilbert-trans":
        return hilbert_encode(grid[:, [1, 0, 2]], depth)
    raise ValueError(f"unknown serialization order {order!r} (choose from {', '.join(ORDERS)})")


def event_depths(grid: torch.Tensor, offset: torch.Tensor) -> list[int]:
    """Per-event depth = bit_length(max grid coordinate of the event + 1) (docs/model.md §1.4)."""
    depths, start = [], 0
    for end in offset.tolist():
        m = int(grid[start:end].max()) if end > start else 0
        depths.append((m + 1).bit_length())
        start = end
    return depths


def serialize(grid: torch.Tensor, offset: torch.Tensor, orders=("hilbert", "hilbert-trans", "z", "z-trans")):
    """Serialize a packed batch.

    Args: grid (N,3) int grid coordinates (>= 0), offset (B,) cumulative counts, order names.
    Returns dict: ``code`` (K,N) int64 = (batch << 3*max_depth) | event code at the event's own depth,
    ``order`` (K,N) int64 argsort of code, ``inverse`` (K,N) inverse permutation, ``depth`` (int, max
    over events), ``depths`` (list of per-event depths).
    """
    depths = event_depths(grid, offset)
    dmax = max(depths)
    if dmax > 16:
        raise ValueError(f"serialization depth {dmax} > 16: grid coordinates up to {int(grid.max())} are too large")
    n = grid.shape[0]
    depth = dmax
    if len(depths) > 1:
        counts = torch.diff(offset, prepend=offset.new_zeros(1)).to(grid.device)
        batch = torch.repeat_interleave(torch.arange(len(depths), device=grid.device), counts)
        if len(set(depths)) > 1:
            depth = torch.repeat_interleave(torch.tensor(depths, device=grid.device), counts)
    code = torch.stack([encode(grid, depth, name) for name in orders])
    if len(depths) > 1:
        code = code | (batch << (3 * dmax))[None]
    order = torch.argsort(code, dim=1)
    inverse = torch.empty_like(order)
    inverse.scatter_(1, order, torch.arange(n, device=grid.device).expand_as(order).contiguous())
    return {"code": code, "order": order, "inverse": inverse, "depth": dmax, "depths": depths}
