"""Submanifold sparse convolution (kernel 3) in pure PyTorch, spconv ``SubMConv3d`` compatible.

Semantics (docs/model.md §1.5, spconv 2.x): for every active site p of a stage,
``out[p] = bias + sum_{(a,b,c) in {0,1,2}^3} W[:, a, b, c, :] @ in[p + (a-1, b-1, c-1)]``, summed over
active neighbours of the same event only (cross-correlation). Weight layout KRSC:
(C_out, 3, 3, 3, C_in), so ``W.permute(0, 4, 1, 2, 3)`` is the weight of a dense ``nn.Conv3d``.

Neighbour search: (batch, x, y, z) is hashed into one int64 key per site; keys are sorted once and the
27 shifted keys are looked up with ``torch.searchsorted``. The resulting map (`KernelMap`) is computed
once per stage and cached on the `Point` (key ``"kmap"``); every block of the stage (encoder and decoder)
reuses it, like spconv's ``indice_key="stage{s}"``.

Two numerically equivalent forward algorithms:

* ``"im2col"``: gather the 27 neighbours of every site into an (N, 27*C_in) matrix (missing neighbours
  read a zero row) and do ONE GEMM with the (27*C_in, C_out) weight.
* ``"pairs"``: per kernel offset, gather only the active (out, in) pairs, multiply by that offset's
  (C_in, C_out) weight and ``index_add_`` into the output (what the reference does).

``"reference"``: per offset gather -> mm -> scatter-add (the official CPU baseline; benchmarks only).

``"auto"`` (default) picks per call: im2col does 27 N C_in C_out multiply-adds regardless of occupancy,
pairs does (#pairs) C_in C_out in 27 smaller GEMMs; LArTPC events are sparse (few active neighbours per
site) so pairs wins when the map is sparse, im2col when it is dense (see `bench/backbone.py`).

Backend: ``LARPANDA_SPARSE_BACKEND=torch|spconv|auto`` (default torch). spconv is used only on CUDA
tensors (its CPU build refuses a biased SubMConv3d, returns wrong values under the default OpenMP wait
policy and cannot backpropagate; docs/model.md §1.10), so CPU always runs the pure-torch path.
"""

from __future__ import annotations

import os

import torch
from torch import nn

# Kernel offsets in KRSC order: k = a*9 + b*3 + c  <->  (a-1, b-1, c-1) along (x, y, z).
OFFSETS = torch.tensor([[a - 1, b - 1, c - 1] for a in range(3) for b in range(3) for c in range(3)], dtype=torch.long)


def grid_keys(batch: torch.Tensor, grid: torch.Tensor, size: int) -> torch.Tensor:
    """Hash (batch, x, y, z) into an int64 key, lexicographic in (batch, x, y, z).

    ``size`` must exceed every coordinate + 1 (coordinates are stored shifted by +1 so that neighbours
    at -1 hash without collisions). Keys fit in int64 for size <= 2^15 and batch < 2^17.
    """
    g = grid.long() + 1
    return ((batch.long() * size + g[:, 0]) * size + g[:, 1]) * size + g[:, 2]


def kernel_map(keys_out: torch.Tensor, keys_in: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """Neighbour map between two key sets (also usable for strided convolutions).

    Args: keys_out (N_out,) int64 keys of output sites (from `grid_keys`, at the coordinates where the
    kernel is centred, i.e. already scaled to the input grid); keys_in (N_in,) keys of input sites;
    offsets (K,3) int64 grid offsets; size: the `grid_keys` size.
    Returns (N_out, K) int64: row index into the inputs of site ``out + offsets[k]``, or ``N_in`` where
    no such input site exists (point it at an appended zero row).
    """
    n_in = keys_in.shape[0]
    sorted_keys, perm = torch.sort(keys_in)
    off = offsets.to(keys_out.device)
    delta = (off[:, 0] * size + off[:, 1]) * size + off[:, 2]  # (K,)
    query = keys_out[:, None] + delta[None, :]  # (N_out, K)
    pos = torch.searchsorted(sorted_keys, query.reshape(-1)).clamp_(max=max(n_in - 1, 0))
    if n_in == 0:
        return torch.full_like(query, 0)
    found = sorted_keys[pos] == query.reshape(-1)
    idx = torch.where(found, perm[pos], torch.full_like(pos, n_in))
    return idx.view(query.shape)


class KernelMap:
    """Submanifold neighbour map of one stage (kernel 3): ``nbr`` (N, 27) with N meaning "missing",
    plus the per-offset active pairs for the "pairs" algorithm (built lazily)."""

    def __init__(self, grid: torch.Tensor, batch: torch.Tensor):
        size = int(grid.max()) + 3 if grid.numel() else 3
        keys = grid_keys(batch, grid, size)
        self.n = grid.shape[0]
        self.nbr = kernel_map(keys, keys, OFFSETS, size)
        self.density = float((self.nbr < self.n).sum()) / max(self.n * 27, 1)
        self._pairs = None

    def pairs(self):
        """Active (out_row, in_row) pairs of the 26 non-centre offsets, grouped by offset.

        Returns (rows_out (P,), rows_in (P,), counts list of 27 ints; the centre offset 13 has count 0
        because every site is its own centre neighbour and is handled by a dense GEMM)."""
        if self._pairs is None:
            valid = self.nbr < self.n
            valid[:, 13] = False
            rows_out, ks = torch.nonzero(valid.t(), as_tuple=True)[::-1]  # sorted by offset, then row
            rows_in = self.nbr[rows_out, ks]
            counts = torch.bincount(ks, minlength=27).tolist()
            self._pairs = (rows_out, rows_in, counts)
        return self._pairs


def subm_conv(feat: torch.Tensor, kmap: KernelMap, weight: torch.Tensor, bias: torch.Tensor | None, algo: str = "auto"):
    """Submanifold conv. feat (N, C_in), weight (C_out, 3, 3, 3, C_in) -> (N, C_out)."""
    c_out, c_in = weight.shape[0], weight.shape[-1]
    if algo == "auto":
        # im2col costs 27*N*C_in*C_out; pairs costs (#pairs)*C_in*C_out plus gathers and one scatter.
        # LArTPC maps are sparse (density 0.08 at stage 0 to ~0.3 at stage 3), where pairs wins.
        algo = "im2col" if kmap.density > 0.5 else "pairs"
    if algo == "im2col":
        padded = torch.cat([feat, feat.new_zeros(1, c_in)], 0)
        cols = padded[kmap.nbr].reshape(kmap.n, 27 * c_in)
        w = weight.reshape(c_out, 27 * c_in)
        return torch.addmm(bias, cols, w.t()) if bias is not None else cols @ w.t()
    # (27, C_in, C_out) split with unbind: its backward stacks the 27 grads once (slicing w[:, k] per
    # offset would allocate and add a zero tensor of the full weight size for every offset)
    w = weight.reshape(c_out, 27, c_in).permute(1, 2, 0).unbind(0)
    center = 13  # offset (0,0,0): every site is its own neighbour -> one dense GEMM
    out = torch.addmm(bias, feat, w[center]) if bias is not None else feat @ w[center]
    if algo == "pairs":
        # one GEMM per offset on the gathered active inputs, then ONE scatter-add of all products
        rows_out, rows_in, counts = kmap.pairs()
        if rows_out.numel() == 0:
            return out
        x = feat[rows_in]
        parts, start = [], 0
        for k, c in enumerate(counts):
            if c:
                parts.append(x[start : start + c] @ w[k])
                start += c
        return out.index_add(0, rows_out, torch.cat(parts, 0))
    if algo == "reference":
        # the official CPU baseline's structure: per offset gather -> mm -> scatter-add
        rows_out, rows_in, counts = kmap.pairs()
        start = 0
        for k, c in enumerate(counts):
            if c:
                ro, ri = rows_out[start : start + c], rows_in[start : start + c]
                out.index_put_((ro,), feat[ri] @ w[k], accumulate=True)
                start += c
        return out
    raise ValueError(f"unknown sparse conv algorithm {algo!r}")


def _backend() -> str:
    b = os.environ.get("LARPANDA_SPARSE_BACKEND", "torch").lower()
    if b not in ("torch", "spconv", "auto"):
        raise ValueError(f"LARPANDA_SPARSE_BACKEND={b!r}: choose torch, spconv or auto")
    return b


_SPCONV = None


def _spconv():
    global _SPCONV
    if _SPCONV is None:
        try:
            import spconv.pytorch as sp  # noqa: F401

            _SPCONV = sp
        except Exception:  # not installed or broken build
            _SPCONV = False
    return _SPCONV


class SubMConv3d(nn.Module):
    """Drop-in for ``spconv.SubMConv3d(C_in, C_out, 3, bias=...)`` (parameters ``weight`` KRSC, ``bias``).

    forward(feat (N,C_in), point) -> (N,C_out); the neighbour map is taken from / cached on ``point``
    under ``"kmap"`` (one per stage, shared by all blocks of the stage)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True, indice_key=None):
        super().__init__()
        if kernel_size != 3:
            raise ValueError("only kernel_size=3 is supported")
        self.in_channels, self.out_channels, self.indice_key = in_channels, out_channels, indice_key
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)
        self.algo = "auto"

    def forward(self, feat: torch.Tensor, point) -> torch.Tensor:
        kmap = get_kernel_map(point)
        if feat.is_cuda and _backend() in ("spconv", "auto") and _spconv():
            return _spconv_forward(self, feat, point)
        return subm_conv(feat, kmap, self.weight, self.bias, self.algo)


def get_kernel_map(point) -> KernelMap:
    """The stage's cached `KernelMap` (built on first use from ``grid_coord`` and ``batch``)."""
    kmap = point.get("kmap")
    if kmap is None:
        kmap = KernelMap(point["grid_coord"], point["batch"])
        point["kmap"] = kmap
    return kmap


def _spconv_forward(module: SubMConv3d, feat: torch.Tensor, point) -> torch.Tensor:  # pragma: no cover (CUDA + spconv)
    sp = _spconv()
    key = ("spconv", module.indice_key)
    cache = point.setdefault("spconv_cache", {})
    grid, batch = point["grid_coord"], point["batch"]
    if key not in cache:
        conv = sp.SubMConv3d(module.in_channels, module.out_channels, 3, bias=True, indice_key=module.indice_key).to(feat.device)
        cache[key] = conv
    conv = cache[key]
    indices = torch.cat([batch[:, None].int(), grid.int()], 1).contiguous()
    shape = (grid.max(0).values + 96).tolist()
    x = sp.SparseConvTensor(feat, indices, shape, int(batch.max()) + 1)
    if "spconv_indice_dict" in point:
        x.indice_dict = point["spconv_indice_dict"]
    conv.weight = module.weight
    conv.bias = module.bias
    y = conv(x)
    point["spconv_indice_dict"] = y.indice_dict
    return y.features
