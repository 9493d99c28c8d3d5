"""Sparse UResNet (the SPINE / DUNE-SBN supervised baseline, docs/model.md §3.5) in pure PyTorch.

Sparse tensors are (features (N, C), voxel keys (N, 4) int64 = [batch, x, y, z]). Convolutions use
gather-matmul-scatter over kernel maps (pairs of input row → output row per kernel offset), the same
scheme as the backbone's submanifold CPE (docs/model.md §1.5): no spconv, no MinkowskiEngine.

* ``SubMConv3d`` kernel 3: output sites = input sites; out[i] = Σ_d W[d]·in[j] where key(j) = key(i) + d
  (cross-correlation, offsets d ∈ {−1,0,1}³ in ``itertools.product`` order).
* ``DownConv3d`` kernel 2 stride 2: output sites = unique(x // 2); out[o] = Σ_{i: x_i//2 = o} W[x_i mod 2]·in[i].
  Equals dense ``conv3d(kernel_size=2, stride=2)`` at the occupied coarse sites.
* ``UpConv3d`` (transposed) kernel 2 stride 2: output sites = the fine sites the coarse level came from;
  out[i] = W[x_i mod 2]·in[parent(i)]. Equals dense ``conv_transpose3d(kernel_size=2, stride=2)`` there.

Weights are stored as (K, C_in, C_out), K = 27 or 8, kernel index k = kx·9+ky·3+kz (k3) or kx·4+ky·2+kz (k2).

Architecture (SPINE ``UResNet``): input SubMConv k3 → ``depth`` levels with ``filters·(l+1)``
channels, ``reps`` residual blocks each (conv3→BN→LeakyReLU(0.33)→conv3→BN, identity or 1×1 skip, + add,
LeakyReLU), BN→LeakyReLU→stride-2 conv down; decoder BN→LeakyReLU→transposed conv up, concatenation with
the encoder skip, ``reps`` residual blocks; BN→LeakyReLU→Linear → ``num_classes``.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn

# Inputs with N·K·C ≤ IM2COL_MAX_ELEMENTS use one (N, K·C) neighbour gather + one matmul; others work on the
# existing pairs only (one gather of all offsets' pairs → one matmul per offset → one index_add). LArTPC sites
# have few of their 27 neighbours, so the pair path does less work: it was 1.7–3× faster for uresnet-base and
# 1.6× for a tiny net on CPU (bench/uresnet.py, docs/benchmarks.md "UResNet"); the gather path is kept (tested
# equal) for GPUs.
IM2COL_MAX_ELEMENTS = 0
AXIS_BITS = 16  # grid coordinates must be < 2**16 per axis; batch < 2**15
LEAKY = 0.33
OFFSETS3 = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.long)  # (27, 3)
CENTRE = 13  # OFFSETS3[CENTRE] = (0, 0, 0)
NON_CENTRE = [k for k in range(27) if k != CENTRE]
# `encode_keys` is linear in (x, y, z): the key of site + (dx, dy, dz) is its key + this step, (26,) for NON_CENTRE
NEIGHBOUR_KEY_STEPS = OFFSETS3[NON_CENTRE] @ torch.tensor([1 << 2 * AXIS_BITS, 1 << AXIS_BITS, 1])


def encode_keys(coords: torch.Tensor) -> torch.Tensor:
    """(N, 4) int64 [batch, x, y, z], coordinates ≥ 0 → (N,) int64 unique key per site."""
    c = coords.long()
    return (((c[:, 0] << AXIS_BITS | c[:, 1]) << AXIS_BITS | c[:, 2]) << AXIS_BITS) | c[:, 3]


def lookup(table_keys_sorted: torch.Tensor, table_rows: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Row of each query key in the table, −1 where absent. The table is given sorted by key."""
    if table_keys_sorted.numel() == 0:
        return torch.full_like(query, -1)
    pos = torch.searchsorted(table_keys_sorted, query).clamp_(max=table_keys_sorted.numel() - 1)
    hit = table_keys_sorted[pos] == query
    return torch.where(hit, table_rows[pos], torch.full_like(pos, -1))


class SparseLevel:
    """The sites of one resolution level plus cached kernel maps.

    Attributes: ``coords`` (N, 4) int64 [batch, x, y, z]; after `coarsen`, ``parent`` (N_fine,) row of each
    fine site in the coarse level and ``child_offset`` (N_fine,) its kernel-2 offset index 0..7.
    """

    def __init__(self, coords: torch.Tensor):
        if coords.numel() and (coords[:, 1:].min() < 0 or coords[:, 1:].max() >= 2**AXIS_BITS - 1):
            raise ValueError(f"sparse coordinates must lie in 0..{2**AXIS_BITS - 2}")
        self.coords = coords.long()

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def submanifold_map(self) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """[(k, in_rows, out_rows)] for the 27 offsets of a kernel-3 submanifold conv (offsets without pairs
        left out; within an offset the pairs in the order of the output sites' keys)."""
        offsets, rows_in, rows_out, sizes = self.submanifold_pairs()
        centre = torch.arange(len(self), device=self.coords.device)
        pairs = list(zip(offsets, rows_in.split(sizes), rows_out.split(sizes))) + [(CENTRE, centre, centre)]
        return sorted(pairs, key=lambda p: p[0])

    def submanifold_pairs(self) -> tuple[list[int], torch.Tensor, torch.Tensor, list[int]]:
        """The kernel-3 pairs of the 26 offsets other than the centre, concatenated (cached): ``(offsets,
        in_rows, out_rows, sizes)``, ``sizes[i]`` pairs for ``offsets[i]``, within an offset in the order of
        the output sites' keys. One lookup finds them all, and one gather and one scatter serve the 26 offsets in
        the convolution (on CPU, 26 small gathers and scatters cost more than the matmuls)."""
        if getattr(self, "_pairs", None) is None:
            keys = encode_keys(self.coords)
            order = torch.argsort(keys)
            keys_sorted = keys[order]
            # no coordinate reaches 2**AXIS_BITS - 1 (checked in __init__), so a step off the lattice's low edge
            # borrows into a field that no site has (all ones) or goes negative, and finds nothing. Shifted sorted
            # keys stay sorted.
            steps = NEIGHBOUR_KEY_STEPS.to(self.coords.device)
            nbr = lookup(keys_sorted, order, (keys_sorted[None, :] + steps[:, None]).reshape(-1)).reshape(26, -1)
            k_idx, pos = torch.nonzero(nbr >= 0, as_tuple=True)
            counts = torch.bincount(k_idx, minlength=26).tolist()
            self._pairs = ([NON_CENTRE[i] for i in range(26) if counts[i]], nbr[k_idx, pos], order[pos],
                           [c for c in counts if c])
        return self._pairs

    def neighbor_table(self) -> torch.Tensor:
        """(N, 27) int64: row of the neighbour at each kernel-3 offset, N (a zero padding row) if absent."""
        if getattr(self, "_table", None) is None:
            table = torch.full((len(self), 27), len(self), dtype=torch.long, device=self.coords.device)
            for k, rows_in, rows_out in self.submanifold_map():
                table[rows_out, k] = rows_in
            self._table = table
        return self._table

    def children_table(self, n_coarse: int) -> torch.Tensor:
        """(N_coarse, 8) int64 (after `coarsen`): fine row of each kernel-2 child, N_fine (padding) if absent."""
        if getattr(self, "_children", None) is None:
            table = torch.full((n_coarse, 8), len(self), dtype=torch.long, device=self.coords.device)
            table[self.parent, self.child_offset] = torch.arange(len(self), device=self.coords.device)
            self._children = table
        return self._children

    def children_grouped(self) -> tuple[list[int], torch.Tensor, list[int]]:
        """(after `coarsen`, cached) ``(offsets, rows, sizes)``: every fine row once, grouped by its child offset,
        ``sizes[i]`` rows for ``offsets[i]``."""
        if getattr(self, "_grouped", None) is None:
            rows = torch.argsort(self.child_offset, stable=True)
            counts = torch.bincount(self.child_offset, minlength=8).tolist()
            self._grouped = ([k for k in range(8) if counts[k]], rows, [c for c in counts if c])
        return self._grouped

    def coarsen(self) -> "SparseLevel":
        """The stride-2 coarse level: sites unique(x // 2) sorted by (batch, x, y, z); sets parent maps."""
        half = self.coords.clone()
        half[:, 1:] = torch.div(half[:, 1:], 2, rounding_mode="floor")
        keys = encode_keys(half)
        ukeys, inverse = torch.unique(keys, sorted=True, return_inverse=True)
        coarse = torch.zeros((ukeys.numel(), 4), dtype=torch.long, device=self.coords.device)
        coarse[inverse] = half
        rem = self.coords[:, 1:] - 2 * half[:, 1:]
        self.parent = inverse
        self.child_offset = rem[:, 0] * 4 + rem[:, 1] * 2 + rem[:, 2]
        return SparseLevel(coarse)


def _kaiming(weight: torch.Tensor, fan_in: int) -> None:
    nn.init.uniform_(weight, -1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(fan_in))


def _mm_runs(a: torch.Tensor, b_of_run, sizes: list[int], out: torch.Tensor) -> torch.Tensor:
    """Row runs of ``a`` (``sizes``) times ``b_of_run(i)``, written into the matching row runs of ``out``."""
    start = 0
    for i, n in enumerate(sizes):
        torch.mm(a[start:start + n], b_of_run(i), out=out[start:start + n])
        start += n
    return out


class _PairConv(torch.autograd.Function):
    """The pair path of the three convolutions below, with a hand-written backward.

    One gather of all pairs' input rows, one matmul per kernel offset written into a preallocated buffer, one
    in-place ``index_add_``; the backward mirrors it (weight gradient per offset into its slice, input gradient
    by one ``index_add_``). Autograd over the same ops records ~2 nodes per offset and builds the weight gradient
    from 26 zero-filled copies: this was 1.13–1.21× faster per `uresnet-deep` training step on 2 threads
    (benchmarks/bench_uresnet_step.py, docs/benchmarks.md "UResNet").
    Under autocast the matmuls run in the autocast dtype, as ``@`` would.
    """

    @staticmethod
    def forward(ctx, feat, weight, rows_in, rows_out, offsets, sizes, n_out, centre):
        device = feat.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else feat.dtype
        ctx.dtypes = (feat.dtype, weight.dtype)
        with torch.autocast(device, enabled=False):
            f, w = feat.to(dtype), weight.to(dtype)
            gathered = f.index_select(0, rows_in)
            prod = _mm_runs(gathered, lambda i: w[offsets[i]], sizes, gathered.new_empty((len(rows_in), w.shape[2])))
            out = f @ w[CENTRE] if centre else f.new_zeros((n_out, w.shape[2]))
            out.index_add_(0, rows_out, prod)
        # the input itself is needed only for the centre offset's weight gradient; the pairs' rows are in `gathered`
        ctx.save_for_backward(f if centre else None, w, gathered, rows_in, rows_out)
        ctx.offsets, ctx.sizes, ctx.centre, ctx.feat_shape = offsets, sizes, centre, f.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        f, w, gathered, rows_in, rows_out = ctx.saved_tensors
        offsets, sizes = ctx.offsets, ctx.sizes
        grad_out = grad_out.to(w.dtype)
        go = grad_out.index_select(0, rows_out)
        grad_feat = grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(w)
            if ctx.centre:
                torch.mm(f.t(), grad_out, out=grad_weight[CENTRE])
            start = 0
            for k, n in zip(offsets, sizes):
                torch.mm(gathered[start:start + n].t(), go[start:start + n], out=grad_weight[k])
                start += n
            grad_weight = grad_weight.to(ctx.dtypes[1])
        if ctx.needs_input_grad[0]:
            grad_pairs = _mm_runs(go, lambda i: w[offsets[i]].t(), sizes, gathered.new_empty(gathered.shape))
            grad_feat = grad_out @ w[CENTRE].t() if ctx.centre else w.new_zeros(ctx.feat_shape)
            grad_feat.index_add_(0, rows_in, grad_pairs)
            grad_feat = grad_feat.to(ctx.dtypes[0])
        return grad_feat, grad_weight, None, None, None, None, None, None


class _SparseConv(nn.Module):
    """The parameters of the sparse convolutions below: weight (K, C_in, C_out) uniform ±1/√fan_in, optional
    zero bias."""

    def __init__(self, kernel_volume: int, c_in: int, c_out: int, bias: bool, fan_in: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(kernel_volume, c_in, c_out))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        _kaiming(self.weight, fan_in)

    def _with_bias(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.bias is None else out + self.bias

    def _pair_conv(self, feat, rows_in, rows_out, offsets, sizes, n_out, centre):
        """``out[rows_out[j]] += feat[rows_in[j]] @ weight[offsets[i]]`` for the pairs j of run i (runs of ``sizes``),
        plus ``feat @ weight[CENTRE]`` when ``centre`` (then n_out = N), else from zeros (n_out, C_out)."""
        return _PairConv.apply(feat, self.weight, rows_in, rows_out, offsets, sizes, n_out, centre)


class SubMConv3d(_SparseConv):
    """Kernel-3 submanifold sparse convolution. weight (27, C_in, C_out)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = False):
        super().__init__(27, c_in, c_out, bias, fan_in=27 * c_in)

    def forward(self, feat: torch.Tensor, level: SparseLevel) -> torch.Tensor:
        k, c_in, c_out = self.weight.shape
        if feat.shape[0] * k * c_in <= IM2COL_MAX_ELEMENTS:  # one gather + one matmul (fast for small N)
            padded = torch.cat([feat, feat.new_zeros((1, c_in))], 0)
            out = padded[level.neighbor_table()].reshape(feat.shape[0], k * c_in) @ self.weight.reshape(k * c_in, c_out)
            return self._with_bias(out)
        # the centre offset maps every site to itself; the other offsets' pairs in one gather and one scatter
        offsets, rows_in, rows_out, sizes = level.submanifold_pairs()
        return self._with_bias(self._pair_conv(feat, rows_in, rows_out, offsets, sizes, len(feat), centre=True))


class DownConv3d(_SparseConv):
    """Kernel-2 stride-2 sparse convolution fine → coarse. weight (8, C_in, C_out)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = False):
        super().__init__(8, c_in, c_out, bias, fan_in=8 * c_in)

    def forward(self, feat: torch.Tensor, fine: SparseLevel, coarse: SparseLevel) -> torch.Tensor:
        k, c_in, c_out = self.weight.shape
        if len(coarse) * k * c_in <= IM2COL_MAX_ELEMENTS:
            padded = torch.cat([feat, feat.new_zeros((1, c_in))], 0)
            table = fine.children_table(len(coarse))
            out = padded[table].reshape(len(coarse), k * c_in) @ self.weight.reshape(k * c_in, c_out)
            return self._with_bias(out)
        offsets, rows, sizes = fine.children_grouped()
        out = self._pair_conv(feat, rows, fine.parent[rows], offsets, sizes, len(coarse), centre=False)
        return self._with_bias(out)


class UpConv3d(_SparseConv):
    """Kernel-2 stride-2 transposed sparse convolution coarse → the fine sites. weight (8, C_in, C_out)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = False):
        super().__init__(8, c_in, c_out, bias, fan_in=c_in)

    def forward(self, feat: torch.Tensor, fine: SparseLevel) -> torch.Tensor:
        k, c_in, c_out = self.weight.shape
        if feat.shape[0] * k * c_out <= IM2COL_MAX_ELEMENTS:  # all 8 children of every coarse site, then pick
            y = (feat @ self.weight.permute(1, 0, 2).reshape(c_in, k * c_out)).reshape(-1, k, c_out)
            return self._with_bias(y[fine.parent, fine.child_offset])
        offsets, rows, sizes = fine.children_grouped()  # rows: every fine site once, grouped by offset
        out = self._pair_conv(feat, fine.parent[rows], rows, offsets, sizes, len(fine), centre=False)
        return self._with_bias(out)


class ResidualBlock(nn.Module):
    """conv3 → BN → LeakyReLU → conv3 → BN, plus identity or 1×1 skip, then LeakyReLU (SPINE ResNetBlock)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = SubMConv3d(c_in, c_out)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = SubMConv3d(c_out, c_out)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.skip = nn.Identity() if c_in == c_out else nn.Linear(c_in, c_out, bias=False)
        self.act = nn.LeakyReLU(LEAKY)

    def forward(self, feat: torch.Tensor, level: SparseLevel) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(feat, level)))
        h = self.bn2(self.conv2(h, level))
        return self.act(h + self.skip(feat))


class UResNet(nn.Module):
    """Sparse UResNet semantic segmenter.

    Args:
        in_channels: 1 (log energy) or 4 (normalized xyz + log energy).
        num_classes: 5 motif classes.
        depth: number of resolution levels (default 5, i.e. 4 down-samplings).
        filters: channels of level 0; level l has filters·(l+1) (32…160 by default).
        reps: residual blocks per level, in the encoder and in the decoder.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 5, depth: int = 5, filters: int = 32, reps: int = 2):
        super().__init__()
        self.in_channels, self.num_classes, self.depth, self.filters, self.reps = in_channels, num_classes, depth, filters, reps
        planes = [filters * (l + 1) for l in range(depth)]
        self.planes = planes
        act = lambda: nn.LeakyReLU(LEAKY)  # noqa: E731
        self.input_conv = SubMConv3d(in_channels, planes[0])
        self.enc_blocks = nn.ModuleList(
            nn.ModuleList(ResidualBlock(planes[l], planes[l]) for _ in range(reps)) for l in range(depth))
        self.down_norm = nn.ModuleList(nn.Sequential(nn.BatchNorm1d(planes[l]), act()) for l in range(depth - 1))
        self.down = nn.ModuleList(DownConv3d(planes[l], planes[l + 1]) for l in range(depth - 1))
        self.up_norm = nn.ModuleList(nn.Sequential(nn.BatchNorm1d(planes[l + 1]), act()) for l in range(depth - 1))
        self.up = nn.ModuleList(UpConv3d(planes[l + 1], planes[l]) for l in range(depth - 1))
        self.dec_blocks = nn.ModuleList(
            nn.ModuleList(ResidualBlock(2 * planes[l] if r == 0 else planes[l], planes[l]) for r in range(reps))
            for l in range(depth - 1))
        self.out_norm = nn.Sequential(nn.BatchNorm1d(planes[0]), act())
        # num_classes=0: no classifier, `forward` returns the (N, filters) features (the semantic task adds seg_head)
        self.classifier = nn.Linear(planes[0], num_classes) if num_classes > 0 else None

    def features(self, feat: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """feat (N, in_channels) float, coords (N, 4) int64 [batch, x, y, z] → (N, filters) decoder features."""
        levels = [SparseLevel(coords)]
        for _ in range(self.depth - 1):
            levels.append(levels[-1].coarsen())
        x = self.input_conv(feat, levels[0])
        skips = []
        for l in range(self.depth):
            for block in self.enc_blocks[l]:
                x = block(x, levels[l])
            if l < self.depth - 1:
                skips.append(x)
                x = self.down[l](self.down_norm[l](x), levels[l], levels[l + 1])
        for l in range(self.depth - 2, -1, -1):
            x = self.up[l](self.up_norm[l](x), levels[l])
            x = torch.cat([skips[l], x], dim=1)
            for block in self.dec_blocks[l]:
                x = block(x, levels[l])
        return self.out_norm(x)

    def forward(self, feat: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes), or features (N, filters) when built with num_classes=0."""
        x = self.features(feat, coords)
        return x if self.classifier is None else self.classifier(x)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


PRESETS = {
    # SPINE default: depth 5, filters 32, reps 2
    "uresnet-base": dict(depth=5, filters=32, reps=2),
    # depth 6: 5 downsamplings, the coarsest grid 32 voxels (9.6 cm) wide. At depth 4 (8 voxels) Michel electrons,
    # known by where they sit (the end of a stopping muon), were barely learned in 4,000 steps (docs/benchmarks.md)
    "uresnet-small": dict(depth=6, filters=16, reps=1),
    # depth 7 (coarsest grid 64 voxels): the `cpu-long` UResNet, 50 minutes on one core for 4,000 steps, test
    # mIoU 0.751 against 0.737 at depth 6, Michel IoU 0.51 against 0.45 (docs/benchmarks.md)
    "uresnet-deep": dict(depth=7, filters=16, reps=1),
    "uresnet-tiny": dict(depth=3, filters=8, reps=1),
}


def build_uresnet(preset: str = "uresnet-base", **overrides) -> UResNet:
    if preset not in PRESETS:
        raise ValueError(f"unknown UResNet preset {preset!r} (choose from {', '.join(PRESETS)})")
    return UResNet(**{**PRESETS[preset], **overrides})


def batch_coords(grid_coord: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """(N, 3) grid coords + (N,) batch ids → (N, 4) int64 [batch, x, y, z]."""
    return torch.cat([batch.long().unsqueeze(1), grid_coord.long()], dim=1)
