"""The panoptic mask-query decoder ("detector-v1m1"), docs/model.md §4.1, with the official key names
(``decoder.*`` of ``panda_particle.pth`` / ``panda_interaction.pth``).

Shapes: B events, Q queries per event, N_b points of event b, N = max_b N_b (padded), C_in the up-cast
backbone width (1232 for panda-base = sum(enc_channels)), D = hidden width (256), K = num_classes.

Events are processed together as a padded (B, N, D) tensor; padding and "stuff" points (filtered by the
LED head) get an additive attention bias of −1e4, which is what the reference's dense (B·Q × N_total)
matrix gives for points of other events; ours never builds cross-event blocks. As in the reference, the
point-wise layers (projection, positional embedding, norm_kv, key/value projections) run on the thing
points only; their rows are then placed in the padded tensor (a training step on 4 simulated events
took 0.32 s instead of 0.46 s projecting every padded column; one thread, docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.ptv3 import LayerScale  # per-channel gamma (keys ls{1,2,3}.gamma)

NEG = -1e4  # the reference's "masked" logit / bias


class MLP(nn.Module):
    """fc1 → GELU → fc2 (keys ``fc1``, ``fc2``)."""

    def __init__(self, in_channels: int, hidden_channels: int | None = None, out_channels: int | None = None):
        super().__init__()
        hidden_channels = hidden_channels or in_channels
        self.fc1 = nn.Linear(in_channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, out_channels or in_channels)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Query self-attention within each event: keys ``q``, ``kv`` (k = first D rows, v = last D), ``proj``.
    ``qk_scale``: the attention scale (None: head_dim^−0.5, as the official ``qk_scale or head_dim**-0.5``)."""

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True, pos_on_keys: bool = True,
                 qk_scale: float | None = None):
        super().__init__()
        self.h = num_heads
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(channels, 2 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.pos_on_keys = pos_on_keys
        self.scale = qk_scale or None

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x, pos: (B, Q, D) → (B, Q, D). pimm training: q = Wq(x+pos), k = Wk(x+pos), v = Wv(x);
        Panda inference: k = Wk(x) (``pos_on_keys=False``; docs/model.md §4.1)."""
        B, Q, D = x.shape
        q = self.q(x + pos)
        kv = self.kv(x + pos if self.pos_on_keys else x)
        k = kv[..., :D]
        v = self.kv(x)[..., D:] if self.pos_on_keys else kv[..., D:]
        q, k, v = (t.reshape(B, Q, self.h, D // self.h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, Q, D))


class CrossAttention(nn.Module):
    """Queries attend to points with an additive bias: keys ``q_proj``, ``k_proj``, ``v_proj``, ``proj``."""

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = True, qk_scale: float | None = None):
        super().__init__()
        self.h = num_heads
        self.q_proj = nn.Linear(channels, channels, bias=qkv_bias)
        self.k_proj = nn.Linear(channels, channels, bias=qkv_bias)
        self.v_proj = nn.Linear(channels, channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.scale = qk_scale or None

    def forward(self, q, k, v, bias, rows=None):
        """q (B,Q,D); k, v (B,N,D) padded, or (R,D) rows placed at ``rows`` = (event (R,), column (R,), N)
        of a zero (B,N,D) tensor after the projections (only those rows are projected; the others are
        masked by ``bias`` anyway); bias (B,Q,N) additive (log-probabilities, −1e4 masked) → (B,Q,D).

        Under CPU autocast the attention itself runs in fp32 (the CPU flash kernel is slower in bf16)."""
        B, Q, D = q.shape
        h, d = self.h, D // self.h
        k, v = self.k_proj(k), self.v_proj(v)
        if rows is not None:
            eb, col, N = rows
            k = _scatter_rows(k, eb, col, B, N)
            v = _scatter_rows(v, eb, col, B, N)
        N = k.shape[1]
        q = self.q_proj(q).reshape(B, Q, h, d).transpose(1, 2)
        k = k.reshape(B, N, h, d).transpose(1, 2)
        v = v.reshape(B, N, h, d).transpose(1, 2)
        if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias.unsqueeze(1).float(),
                                                     scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.unsqueeze(1).to(q.dtype), scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, Q, D))


def _scatter_rows(x: torch.Tensor, eb: torch.Tensor, col: torch.Tensor, B: int, N: int) -> torch.Tensor:
    """(R,D) rows → zero-filled (B,N,D) with row r at [eb[r], col[r]] (differentiable)."""
    out = x.new_zeros(B, N, x.shape[-1])
    out[eb, col] = x
    return out


class Block(nn.Module):
    """Pre-norm decoder block: mask logits from the INPUT queries, masked cross-attention, self-attention,
    MLP (docs/model.md §4.1). Keys: norm1, norm_kv, self_attn, norm2, cross_attn, norm3, mlp, mask_mlp, and
    with ``layer_scale`` (official Detector kwarg; Panda: None) ``ls1`` (cross-attention), ``ls2``
    (self-attention), ``ls3`` (MLP)."""

    def __init__(self, channels=256, num_heads=16, mlp_ratio=4.0, qkv_bias=True, pos_on_keys=True, eps=1e-6,
                 qk_scale=None, layer_scale=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.self_attn = SelfAttention(channels, num_heads, qkv_bias, pos_on_keys, qk_scale)
        self.norm2 = nn.LayerNorm(channels)
        self.cross_attn = CrossAttention(channels, num_heads, qkv_bias, qk_scale)
        self.norm3 = nn.LayerNorm(channels)
        self.mlp = MLP(channels, int(channels * mlp_ratio), channels)
        self.mask_mlp = MLP(channels, channels, channels)
        self.eps = eps
        ls = (lambda: LayerScale(channels, layer_scale)) if layer_scale is not None else nn.Identity
        self.ls1, self.ls2, self.ls3 = ls(), ls(), ls()

    def forward(self, q, feat, pos_q, pos_k, key_mask, rows=None):
        """q (B,Q,D); feat (B,N,D) projected point features; pos_q (B,Q,D); pos_k (B,N,D) or None;
        key_mask (B,N) bool True = attendable thing point. Returns (q_out (B,Q,D), mask_logits (B,Q,N)).

        With ``rows`` = (event (R,), column (R,), N), ``feat``/``pos_k`` are instead the (R,D) rows of the
        attendable points only: the point-wise layers (norm_kv, k/v projections) run on those rows and
        the other columns (padding, stuff) hold zeros, whose mask logits the caller overwrites with −1e4
        and whose attention weight the bias zeroes; the outputs equal the padded computation's."""
        kv = self.norm_kv(feat)
        k = kv + pos_k if pos_k is not None else kv
        kv_pad = kv if rows is None else _scatter_rows(kv, rows[0], rows[1], q.shape[0], rows[2])
        z = torch.einsum("bnd,bqd->bqn", kv_pad, self.mask_mlp(q).to(kv_pad.dtype))
        bias = torch.log(torch.sigmoid(z.float()).detach() + self.eps)
        bias = bias.masked_fill(~key_mask[:, None, :], NEG)
        q = q + self.ls1(self.cross_attn(self.norm1(q) + pos_q, k, kv, bias, rows=rows)).to(q.dtype)
        q = q + self.ls2(self.self_attn(self.norm2(q), pos_q)).to(q.dtype)
        q = q + self.ls3(self.mlp(self.norm3(q))).to(q.dtype)
        return q, z


class MaskQueryDecoder(nn.Module):
    """Learned-query mask decoder + LED ("stuff") filter (docs/model.md §4.1).

    Args:
        full_in_channels: C_in, width of the up-cast backbone features (1232 for panda-base).
        hidden_channels: D (256). num_heads: 16. num_queries: 32 particle / 12 interaction.
        num_classes: K incl. the stuff class (6 for PID, 2 for interaction); the class head has K+1 logits.
        mlp_point_proj: MLP (pid) or Linear (vtx) for ``full_point_proj`` and ``cls_pred``.
        pos_on_keys: self-attention keys get the query positional embedding (pimm training, True) or not
            (Panda inference, False); docs/model.md §4.1.
        qk_scale, layer_scale: the official Detector kwargs (None in Panda): attention scale (None:
            head_dim^−0.5) and the init of the per-block layer scales ``ls1..3`` (None: no layer scale).
    """

    def __init__(self, full_in_channels=1232, hidden_channels=256, num_heads=16, num_classes=6, num_queries=32,
                 depth=3, mlp_ratio=4.0, qkv_bias=True, mlp_point_proj=True, stuff_classes=(5,),
                 pos_on_keys=True, pos_emb=True, qk_scale=None, layer_scale=None):
        super().__init__()
        D = hidden_channels
        self.num_classes, self.num_queries = num_classes, num_queries
        self.stuff_classes = tuple(stuff_classes)
        self.query_feat = nn.Embedding(num_queries, D)
        self.query_embed = nn.Embedding(num_queries, D)
        self.pos_emb = nn.Sequential(nn.Linear(3, D), nn.GELU(), nn.Linear(D, D)) if pos_emb else None
        self.blocks = nn.ModuleList(
            Block(D, num_heads, mlp_ratio, qkv_bias, pos_on_keys, qk_scale=qk_scale, layer_scale=layer_scale)
            for _ in range(depth))
        self.final_norm = nn.LayerNorm(D)
        if mlp_point_proj:
            self.cls_pred = MLP(D, D, num_classes + 1)
            self.full_point_proj = MLP(full_in_channels, D, D)
        else:
            self.cls_pred = nn.Linear(D, num_classes + 1)
            self.full_point_proj = nn.Linear(full_in_channels, D)
        self.stuff_head = nn.Sequential(nn.Linear(full_in_channels, D), nn.ReLU(), nn.Linear(D, 1))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, feat: torch.Tensor, coord: torch.Tensor, offset: torch.Tensor, thing: torch.Tensor | None = None):
        """feat (N_total, C_in) up-cast backbone features; coord (N_total, 3) normalized xyz; offset (B,).
        thing: optional (N_total,) bool override of the LED filter (pimm ``train_filter_use_gt``).

        Returns a dict: ``stuff_logits`` (N_total,), ``layers`` = list over the supervised layers of
        (mask_logits (B,Q,N) with −1e4 at stuff/padding points, class_logits (B,Q,K+1)), the last entry
        being the final prediction; ``valid`` (B,N) bool (real points), ``counts`` (B,); in eval mode also
        ``seg_logits`` (N_total, K), the official Detector's per-point class logits (`seg_logits`).
        """
        B = offset.numel()
        counts = torch.diff(offset, prepend=offset.new_zeros(1))
        Nmax = int(counts.max()) if B else 0
        batch = torch.repeat_interleave(torch.arange(B, device=feat.device), counts)
        col = torch.arange(feat.shape[0], device=feat.device) - (offset - counts)[batch]

        stuff_logits = self.stuff_head(feat).squeeze(-1)
        if thing is None:
            thing = torch.sigmoid(stuff_logits.detach().float()) < 0.5
        valid = torch.zeros(B, Nmax, dtype=torch.bool, device=feat.device)
        valid[batch, col] = True
        key_mask = torch.zeros_like(valid)
        key_mask[batch, col] = thing
        # Panda: an event without thing points keeps its point 0 (pimm asserts instead)
        empty = ~key_mask.any(1)
        key_mask[empty, 0] = True
        # the point-wise layers run on the attendable (thing) rows only, as the reference (whose other
        # rows never reach the decoder); padding and stuff columns hold zeros and are masked below
        sel = key_mask[batch, col]
        eb, ec = batch[sel], col[sel]
        rows = (eb, ec, Nmax)
        f = self.full_point_proj(feat[sel])
        pos_k = self.pos_emb(coord[sel]) if self.pos_emb is not None else None
        q = self.query_feat.weight.unsqueeze(0).expand(B, -1, -1)
        pos_q = self.query_embed.weight.unsqueeze(0).expand(B, -1, -1)
        layers = []
        for blk in self.blocks:
            q, z = blk(q, f, pos_q, pos_k, key_mask, rows=rows)
            z = z.masked_fill(~key_mask[:, None, :], NEG)
            layers.append((z, self.cls_pred(self.final_norm(q))))
        out = {"stuff_logits": stuff_logits, "layers": layers, "valid": valid, "counts": counts,
               "batch": batch, "col": col}
        if not self.training:
            out["seg_logits"] = seg_logits(*layers[-1], self.num_classes)[batch, col]
        return out


def seg_logits(mask_logits: torch.Tensor, class_logits: torch.Tensor, num_classes: int, chunk: int = 4096):
    """Per-point class logits of the official Detector (Panda ``MaskQueryDecoder._compute_predictions``):
    ``seg[b, n, k] = logsumexp_q(mask_logits[b, q, n] + class_logits[b, q, k])`` for the K = ``num_classes``
    classes (no "no object"), fp32, from the final layer's (B,Q,N) mask logits (−1e4 at stuff and padding
    points, so their values are about −1e4) and (B,Q,K+1) class logits. Returns (B, N, K); the
    (B, Q, chunk, K) intermediate is bounded by chunking over points."""
    z = mask_logits.float()
    c = class_logits[..., :num_classes].float()
    parts = [torch.logsumexp(z[:, :, s:s + chunk, None] + c[:, :, None, :], dim=1) for s in range(0, z.shape[2], chunk)]
    return torch.cat(parts, 1) if parts else z.new_zeros(z.shape[0], 0, num_classes)
