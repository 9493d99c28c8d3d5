"""Point Transformer V3, Sonata/Panda variant "PT-v3m2", in pure PyTorch (docs/model.md §1).

State-dict keys equal the official ones (docs/model.md §1.9), so official Panda weights load unchanged.
Differences from the official code, on purpose (docs/model.md §1.10):

* attention patches are per event (flash semantics; batch-invariant), see `attention.py`;
* serialization depth is per event (batch-invariant), see `serialization.py`;
* order shuffling (model flag ``shuffle_orders``) happens only in ``train()`` mode, at every stage
  including pooled ones (the reference also shuffles at pooled stages in eval).

``forward(point, upcast=True)``: input `Point` with ``coord`` (N,3), ``grid_coord`` (N,3) int,
``feat`` (N,in_channels), ``offset`` (B,), optional ``mask`` (N,) bool (SSL). Rows of every returned
per-point tensor at stage 0 follow the INPUT rows. enc_mode=True and upcast: ``feat`` (N, sum(enc_channels));
enc_mode=True, upcast=False: the stage-4 Point (``pooling_parent``/``pooling_inverse`` chain; see
`upcast`); enc_mode=False: decoder output at stage 0, ``feat`` (N, dec_channels[0]).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.point import Point, offset2batch
from .attention import SerializedAttention
from .serialization import serialize
from .sparse_conv import SubMConv3d, get_kernel_map

OFFICIAL_DEFAULTS = dict(
    in_channels=6, order=("z", "z-trans"), stride=(2, 2, 2, 2), enc_depths=(2, 2, 2, 6, 2),
    enc_channels=(32, 64, 128, 256, 512), enc_num_head=(2, 4, 8, 16, 32), enc_patch_size=(48, 48, 48, 48, 48),
    dec_depths=(2, 2, 2, 2), dec_channels=(64, 64, 128, 256), dec_num_head=(4, 4, 8, 16),
    dec_patch_size=(48, 48, 48, 48), mlp_ratio=4, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0,
    drop_path=0.3, layer_scale=None, pre_norm=True, shuffle_orders=True, enable_rpe=False, enable_flash=True,
    upcast_attention=False, upcast_softmax=False, traceable=False, mask_token=False, enc_mode=False,
    freeze_encoder=False,
)
# Official kwargs accepted only at their default (features Panda does not use).
_UNSUPPORTED = dict(enable_rpe=False, full_attention=False, cpe_first_layer_only=False, cpe_shared_weight=False,
                    enable_cpe=True, shared_cpe_conv=False, add_iso_features=False, embedding_act_layer=True)


class DropPath(nn.Module):
    """Stochastic depth per row (per point), scaled by 1/keep."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        m = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * m / keep


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class MLP(nn.Module):
    def __init__(self, c: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(c, hidden), nn.GELU(), nn.Linear(hidden, c), nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class CPE(nn.Module):
    """cpe.0 SubMConv3d(C,C,3), cpe.1 Linear(C,C), cpe.2 LayerNorm(C); computed in fp32 (docs/model.md §1.5)."""

    def __init__(self, c: int, indice_key: str):
        super().__init__()
        self.add_module("0", SubMConv3d(c, c, 3, bias=True, indice_key=indice_key))
        self.add_module("1", nn.Linear(c, c))
        self.add_module("2", nn.LayerNorm(c))

    def forward(self, feat, point):
        dtype = feat.dtype
        with torch.autocast(device_type=feat.device.type, enabled=False):
            x = getattr(self, "0")(feat.float(), point)
            x = getattr(self, "2")(getattr(self, "1")(x))
        return x.to(dtype)


def _seq(module: nn.Module) -> nn.Sequential:
    """Wrap as a one-element Sequential so the key gains the official ``.0`` (e.g. ``norm1.0.weight``)."""
    return nn.Sequential(module)


class Block(nn.Module):
    def __init__(self, channels, num_heads, patch_size=48, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, attn_drop=0.0,
                 proj_drop=0.0, drop_path=0.0, layer_scale=None, pre_norm=True, order_index=0, cpe_indice_key=None,
                 enable_flash=True, upcast_attention=False, upcast_softmax=False):
        super().__init__()
        self.pre_norm = pre_norm
        self.cpe = CPE(channels, cpe_indice_key)
        self.norm1 = _seq(nn.LayerNorm(channels))
        self.ls1 = _seq(LayerScale(channels, layer_scale)) if layer_scale is not None else None
        self.attn = SerializedAttention(channels, num_heads, patch_size, qkv_bias, qk_scale, attn_drop, proj_drop,
                                        order_index, enable_flash, upcast_attention, upcast_softmax)
        self.norm2 = _seq(nn.LayerNorm(channels))
        self.ls2 = _seq(LayerScale(channels, layer_scale)) if layer_scale is not None else None
        self.mlp = _seq(MLP(channels, int(channels * mlp_ratio), proj_drop))
        self.drop_path = DropPath(drop_path)

    def forward(self, point: Point) -> Point:
        x = point.feat
        x = x + self.cpe(x, point)
        h = self.norm1(x) if self.pre_norm else x
        h = self.attn(h, point)
        if self.ls1 is not None:
            h = self.ls1(h)
        x = x + self.drop_path(h)
        if not self.pre_norm:
            x = self.norm1(x)
        h = self.norm2(x) if self.pre_norm else x
        h = self.mlp(h)
        if self.ls2 is not None:
            h = self.ls2(h)
        x = x + self.drop_path(h)
        if not self.pre_norm:
            x = self.norm2(x)
        point.feat = x
        return point


class Stem(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear, self.norm, self.act = nn.Linear(cin, cout), nn.LayerNorm(cout), nn.GELU()

    def forward(self, x):
        return self.act(self.norm(self.linear(x)))


class Embedding(nn.Module):
    """``embedding.stem.{linear,norm}`` + optional ``embedding.mask_token`` (1, C) (docs/model.md §1.3)."""

    def __init__(self, in_channels, channels, mask_token=False):
        super().__init__()
        self.stem = Stem(in_channels, channels)
        self.mask_token = nn.Parameter(torch.zeros(1, channels)) if mask_token else None

    def forward(self, point: Point) -> Point:
        x = self.stem(point.feat)
        if self.mask_token is not None and "mask" in point:
            x = torch.where(point["mask"].unsqueeze(-1), self.mask_token.to(x.dtype), x)
        point.feat = x
        return point


def serialize_point(point: Point, order, shuffle: bool) -> Point:
    """Fill ``serialized_{code,order,inverse,depth}`` (K,N); permute the K rows when ``shuffle``."""
    s = serialize(point.grid_coord, point.offset, order)
    code, ordr, inv = s["code"], s["order"], s["inverse"]
    if shuffle:
        perm = torch.randperm(code.shape[0])
        code, ordr, inv = code[perm], ordr[perm], inv[perm]
    point.serialized_code, point.serialized_order, point.serialized_inverse = code, ordr, inv
    point.serialized_depth = s["depth"]
    return point


class GridPooling(nn.Module):
    """``down.proj`` Linear, segment max over cells of grid_coord // stride, ``down.norm.0`` LN, GELU.

    Coarse rows are unique (batch, x, y, z) sorted lexicographically (docs/model.md §1.7)."""

    def __init__(self, cin, cout, stride=2):
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(cin, cout)
        self.norm = _seq(nn.LayerNorm(cout))
        self.act = _seq(nn.GELU())

    def forward(self, point: Point, order, shuffle: bool) -> Point:
        grid = torch.div(point.grid_coord, self.stride, rounding_mode="trunc").long()
        size = int(grid.max()) + 1 if grid.numel() else 1
        key = ((point.batch.long() * size + grid[:, 0]) * size + grid[:, 1]) * size + grid[:, 2]
        ukey, cluster, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
        m = ukey.shape[0]
        x = self.proj(point.feat)
        idx = cluster[:, None].expand(-1, x.shape[1])
        feat = x.new_zeros(m, x.shape[1]).scatter_reduce(0, idx, x, "amax", include_self=False)
        z = ukey % size
        y = (ukey // size) % size
        xx = (ukey // (size * size)) % size
        batch = ukey // (size ** 3)
        coarse = Point(feat=self.act(self.norm(feat)), grid_coord=torch.stack([xx, y, z], 1), batch=batch)
        coarse.offset = torch.cumsum(torch.bincount(batch, minlength=point.offset.shape[0]), 0)
        if "coord" in point:
            c = point.coord
            coarse.coord = c.new_zeros(m, c.shape[1]).index_add_(0, cluster, c) / counts[:, None].to(c.dtype)
        if "origin_coord" in point:
            c = point.origin_coord
            coarse.origin_coord = c.new_zeros(m, c.shape[1]).index_add_(0, cluster, c) / counts[:, None].to(c.dtype)
        if "grid_size" in point:
            coarse.grid_size = point.grid_size * self.stride
        coarse.pooling_parent = point
        coarse.pooling_inverse = cluster
        return serialize_point(coarse, order, shuffle)


class GridUnpooling(nn.Module):
    """``up.proj`` (Linear, LN, GELU) on the coarse Point, ``up.proj_skip`` on the parent; parent feat =
    proj_skip(parent) + proj(child)[inverse] (docs/model.md §1.8)."""

    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(cin, cout), nn.LayerNorm(cout), nn.GELU())
        self.proj_skip = nn.Sequential(nn.Linear(cskip, cout), nn.LayerNorm(cout), nn.GELU())

    def forward(self, point: Point) -> Point:
        parent = point.pop("pooling_parent")
        inverse = point.pop("pooling_inverse")
        parent.feat = self.proj_skip(parent.feat) + self.proj(point.feat)[inverse]
        return parent


def _upcast(point: Point, levels: int | None = None) -> Point:
    """Concatenate coarse features onto finer points, ``levels`` steps up the pooling chain (None: all
    the way to stage 0). From the stage-4 Point: levels=2 gives [f2|f3|f4] at stage-2 resolution (Sonata
    ``up_cast_level=2``), None gives [f0|f1|f2|f3|f4] at input resolution (docs/model.md §1.7). The chain
    is consumed (``pooling_parent``/``pooling_inverse`` are popped), like the reference.

    The columns are written into one preallocated (N_target, sum C) tensor through the composed pooling
    inverses (the reference concatenates level by level, holding about twice that at the last step); the
    values are the same copies."""
    chain = [point]  # coarsest first
    while "pooling_parent" in chain[-1] and (levels is None or len(chain) - 1 < levels):
        chain.append(chain[-1]["pooling_parent"])
    if levels is not None and len(chain) - 1 < levels:
        raise ValueError(f"upcast: asked for {levels} levels, the pooling chain has only {len(chain) - 1}")
    if len(chain) == 1:
        return point
    target = chain[-1]
    feats = [p.feat for p in reversed(chain)]  # target first
    dtype = feats[0].dtype
    for f in feats[1:]:
        dtype = torch.promote_types(dtype, f.dtype)
    out = feats[0].new_empty(feats[0].shape[0], sum(f.shape[1] for f in feats), dtype=dtype)
    col, idx = 0, None
    for i, f in enumerate(feats):
        if i > 0:  # rows of this coarser level for each target row
            coarse = chain[len(chain) - 1 - i]  # holds the map from its parent's rows to its own
            inverse = coarse.pop("pooling_inverse")
            coarse.pop("pooling_parent")
            idx = inverse if idx is None else inverse[idx]
        out[:, col : col + f.shape[1]] = f if idx is None else f[idx]
        col += f.shape[1]
    target.feat = out
    return target


upcast = _upcast


class Stage(nn.Module):
    """``enc.enc{s}`` / ``dec.dec{s}``: optional ``down``/``up`` followed by ``block{i}``."""

    def __init__(self):
        super().__init__()
        self.blocks: list[str] = []

    def add_block(self, name: str, module: nn.Module):
        self.add_module(name, module)
        self.blocks.append(name)


class PointTransformerV3(nn.Module):
    """PT-v3m2 with the official constructor kwargs (see `OFFICIAL_DEFAULTS`; docs/model.md §1.1, docs/design.md §5.2)."""

    def __init__(self, **kwargs):
        super().__init__()
        kwargs = dict(kwargs)
        kwargs.pop("type", None)
        for k, default in _UNSUPPORTED.items():
            if k in kwargs and (v := kwargs.pop(k)) != default:
                raise ValueError(f"PointTransformerV3: {k}={v!r} is not supported (only {default!r})")
        unknown = set(kwargs) - set(OFFICIAL_DEFAULTS)
        if unknown:
            raise ValueError(f"PointTransformerV3: unknown arguments {sorted(unknown)}")
        cfg = {**OFFICIAL_DEFAULTS, **kwargs}
        for k in ("order", "stride", "enc_depths", "enc_channels", "enc_num_head", "enc_patch_size", "dec_depths",
                  "dec_channels", "dec_num_head", "dec_patch_size"):
            cfg[k] = tuple(cfg[k]) if not isinstance(cfg[k], str) else (cfg[k],)
        self.kwargs = cfg  # resolved constructor kwargs
        self.config = cfg  # io.Backbone replaces this with the weights config {"task", "backbone"}
        self.order = cfg["order"]
        self.shuffle_orders = cfg["shuffle_orders"]
        self.enc_mode = cfg["enc_mode"]
        ns = len(cfg["enc_depths"])
        assert ns == len(cfg["stride"]) + 1 == len(cfg["enc_channels"]) == len(cfg["enc_num_head"]) == len(cfg["enc_patch_size"])
        common = dict(mlp_ratio=cfg["mlp_ratio"], qkv_bias=cfg["qkv_bias"], qk_scale=cfg["qk_scale"],
                      attn_drop=cfg["attn_drop"], proj_drop=cfg["proj_drop"], layer_scale=cfg["layer_scale"],
                      pre_norm=cfg["pre_norm"], enable_flash=cfg["enable_flash"],
                      upcast_attention=cfg["upcast_attention"], upcast_softmax=cfg["upcast_softmax"])
        self.embedding = Embedding(cfg["in_channels"], cfg["enc_channels"][0], cfg["mask_token"])
        dpr = torch.linspace(0, cfg["drop_path"], sum(cfg["enc_depths"]), device="cpu").tolist()
        self.enc = nn.Module()
        for s in range(ns):
            stage = Stage()
            if s > 0:
                stage.add_module("down", GridPooling(cfg["enc_channels"][s - 1], cfg["enc_channels"][s], cfg["stride"][s - 1]))
            dp = dpr[sum(cfg["enc_depths"][:s]): sum(cfg["enc_depths"][: s + 1])]
            for i in range(cfg["enc_depths"][s]):
                stage.add_block(f"block{i}", Block(cfg["enc_channels"][s], cfg["enc_num_head"][s], cfg["enc_patch_size"][s],
                                                   drop_path=dp[i], order_index=i % len(self.order),
                                                   cpe_indice_key=f"stage{s}", **common))
            self.enc.add_module(f"enc{s}", stage)
        if not self.enc_mode:
            assert len(cfg["dec_depths"]) == ns - 1
            dch = list(cfg["dec_channels"]) + [cfg["enc_channels"][-1]]
            ddpr = torch.linspace(0, cfg["drop_path"], sum(cfg["dec_depths"]), device="cpu").tolist()
            self.dec = nn.Module()
            for s in reversed(range(ns - 1)):
                dp = ddpr[sum(cfg["dec_depths"][:s]): sum(cfg["dec_depths"][: s + 1])][::-1]
                stage = Stage()
                stage.add_module("up", GridUnpooling(dch[s + 1], cfg["enc_channels"][s], dch[s]))
                for i in range(cfg["dec_depths"][s]):
                    stage.add_block(f"block{i}", Block(dch[s], cfg["dec_num_head"][s], cfg["dec_patch_size"][s],
                                                       drop_path=dp[i], order_index=i % len(self.order),
                                                       cpe_indice_key=f"stage{s}", **common))
                self.dec.add_module(f"dec{s}", stage)
        self.apply(_init_weights)
        if self.embedding.mask_token is not None:
            nn.init.zeros_(self.embedding.mask_token)
        if cfg["freeze_encoder"]:
            for p in list(self.embedding.parameters()) + list(self.enc.parameters()):
                p.requires_grad_(False)

    @property
    def out_channels(self) -> int:
        return sum(self.kwargs["enc_channels"]) if self.enc_mode else self.kwargs["dec_channels"][0]

    def _prepare(self, point) -> Point:
        point = Point(point)
        if "batch" not in point:
            point.batch = offset2batch(point.offset)
        if "grid_coord" not in point:
            # Pretraining inputs: grid from coord and grid_size (docs/model.md §1.2), per-batch minimum.
            gs = point.get("grid_size", 0.001)
            point.grid_coord = torch.div(point.coord - point.coord.min(0).values, gs, rounding_mode="trunc").long()
        for k in ("kmap", "attn_plan"):
            point.pop(k, None)
        return point

    def forward(self, point, upcast: bool = True) -> Point:
        point = self._prepare(point)
        shuffle = self.shuffle_orders and self.training
        # Inference of the encoder alone (no grad, up-cast): a finished stage keeps only what the up-cast
        # needs, so its neighbour map, attention plans and serialization are freed (~440 B per point per
        # stage; the decoder, training and upcast=False callers still see them).
        free = self.enc_mode and upcast and not torch.is_grad_enabled()
        point = self.embedding(point)
        point = serialize_point(point, self.order, shuffle)
        for s, stage in enumerate(self.enc.children()):
            if s > 0:
                child = stage.down(point, self.order, shuffle)
                if free:
                    _drop_stage_caches(point)
                point = child
            for name in stage.blocks:
                point = getattr(stage, name)(point)
        if free:
            _drop_stage_caches(point)
        if not self.enc_mode:
            for stage in self.dec.children():
                point = stage.up(point)
                for name in stage.blocks:
                    point = getattr(stage, name)(point)
            return point
        if upcast:
            point = _upcast(point)
        return point


_STAGE_CACHES = ("kmap", "attn_plan", "serialized_code", "serialized_order", "serialized_inverse")


def _drop_stage_caches(point: Point) -> None:
    """Free a finished encoder stage's neighbour map, attention plans and serialization (inference)."""
    for k in _STAGE_CACHES:
        point.pop(k, None)


def _init_weights(m):
    """docs/model.md §1.9: trunc_normal(0.02) for Linear and SubMConv3d weights, zero biases; LN 1/0."""
    if isinstance(m, (nn.Linear, SubMConv3d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


__all__ = ["PointTransformerV3", "upcast", "Block", "GridPooling", "GridUnpooling", "get_kernel_map"]
