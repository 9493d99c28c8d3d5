"""Serialized patch attention with per-event patches (flash-attn semantics, docs/model.md §1.6).

For an event of n points (in serialized order) and patch size K:

* n <= K: one attention sequence of length n;
* n > K: patches start at 0, K, 2K, ... and the LAST patch is the last K points of the event
  (the reference pads n to ceil(n/K)*K by repeating the previous patch's tokens, which makes the last
  patch exactly positions n-K..n-1; those repeated keys take part in the attention, their outputs are
  dropped: each position keeps the output of the first patch containing it, ``unpad``).

This is batch-invariant (the official non-flash path shrinks K to the smallest event of the batch;
docs/model.md §1.10). All patches of length K run in one ``scaled_dot_product_attention`` call;
events with n < K form one more call, padded to the longest of them with a key mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchPlan:
    """Index plan of one stage for one patch size K (cached on the Point under ``"attn_plan"``).

    ``full_idx`` (P, K): serialized positions of each full patch; ``small_idx`` (G, L) positions of the
    events with n < K padded with position 0 and ``small_mask`` (G, L) (None when G == 0 or all equal);
    ``src`` (N,): for each serialized position, its row in cat([full_out.view(-1), small_out.view(-1)]).
    """

    def __init__(self, offset: torch.Tensor, k: int, device):
        counts = torch.diff(offset.cpu(), prepend=torch.zeros(1, dtype=torch.long)).tolist()
        full_starts, src_parts, small = [], [], []
        start = 0
        for n in counts:
            if n >= k:
                m = -(-n // k)
                base = len(full_starts) * k
                starts = [start + j * k for j in range(m - 1)] + [start + n - k]
                full_starts += starts
                p = torch.arange(n)
                j = torch.clamp(p // k, max=m - 1)
                within = torch.where(j < m - 1, p % k, p - (n - k))
                src_parts.append((start, base + j * k + within))
            elif n > 0:
                small.append((start, n))
            start += n
        self.k = k
        n_full = len(full_starts) * k
        self.full_idx = (torch.tensor(full_starts, dtype=torch.long)[:, None] + torch.arange(k)[None]) if full_starts else None
        if small:
            length = max(n for _, n in small)
            ar = torch.arange(length)
            idx = torch.stack([torch.where(ar < n, s + ar, torch.full_like(ar, s)) for s, n in small])
            mask = torch.stack([ar < n for _, n in small])
            self.small_idx = idx
            self.small_mask = None if all(n == length for _, n in small) else mask
            for g, (s, n) in enumerate(small):
                src_parts.append((s, n_full + g * length + torch.arange(n)))
        else:
            self.small_idx, self.small_mask = None, None
        total = start
        src = torch.empty(total, dtype=torch.long)
        for s, part in src_parts:
            src[s : s + len(part)] = part
        self.src = src.to(device)
        if self.full_idx is not None:
            self.full_idx = self.full_idx.to(device)
        if self.small_idx is not None:
            self.small_idx = self.small_idx.to(device)
        if self.small_mask is not None:
            self.small_mask = self.small_mask.to(device)


def get_plan(point, k: int) -> PatchPlan:
    plans = point.get("attn_plan")
    if plans is None:
        plans = {}
        point["attn_plan"] = plans
    if k not in plans:
        plans[k] = PatchPlan(point["offset"], k, point["feat"].device)
    return plans[k]


# "sdpa" (default) or "reference": explicit (q*scale) k^T -> softmax -> v on the padded patches, the
# structure of the official non-flash path; used as the same-process baseline in bench/backbone.py.
IMPL = "sdpa"


def _explicit_attention(q, k, v, attn_mask, dropout_p, scale):
    attn = (q * scale) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn.masked_fill(~attn_mask, float("-inf"))
    attn = F.dropout(attn.softmax(-1), dropout_p)
    return attn @ v


def patch_attention(qkv: torch.Tensor, plan: PatchPlan, num_heads: int, scale: float, dropout_p: float = 0.0,
                    gather: tuple | None = None, src: torch.Tensor | None = None):
    """Attention over the plan's patches.

    qkv (N, 3C) ([q|k|v], heads contiguous). Without ``gather``/``src``, rows are in serialized order
    and so is the (N, C) result. With them (`SerializedAttention` passes the plan indices composed with
    the stage's order/inverse), ``qkv`` is in point row order, ``gather`` holds (full, small) row
    indices and ``src`` maps each point row to its output slot, so only one gather each way is made.
    """
    sdpa = F.scaled_dot_product_attention if IMPL == "sdpa" else _explicit_attention
    n, c3 = qkv.shape
    c = c3 // 3
    d = c // num_heads
    if gather is None:
        gather = (plan.full_idx, plan.small_idx)
    outs = []
    for idx, mask in ((gather[0], None), (gather[1], plan.small_mask)):
        if idx is None:
            continue
        g, length = idx.shape
        x = qkv[idx.reshape(-1)].view(g, length, 3, num_heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = x.unbind(0)  # (G, H, L, D)
        attn_mask = mask[:, None, None, :] if mask is not None else None
        o = sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)
        outs.append(o.transpose(1, 2).reshape(g * length, c))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    return out[plan.src if src is None else src]


def composed_indices(point, plan: PatchPlan, order_index: int):
    """(gather (full, small), src) for one order row: plan indices composed with the stage's
    ``serialized_order``/``serialized_inverse`` (cached per plan and order row)."""
    cache = plan.__dict__.setdefault("_composed", {})
    key = (order_index, id(point["serialized_order"]))
    if key not in cache:
        order = point["serialized_order"][order_index]
        inverse = point["serialized_inverse"][order_index]
        full = order[plan.full_idx] if plan.full_idx is not None else None
        small = order[plan.small_idx] if plan.small_idx is not None else None
        cache[key] = ((full, small), plan.src[inverse])
    return cache[key]


def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_qkvpacked_func

        return flash_attn_varlen_qkvpacked_func
    except Exception:
        return None


class SerializedAttention(nn.Module):
    """PTv3 serialized patch attention. Keys ``qkv`` (Linear C->3C), ``proj`` (Linear C->C).

    forward(feat (N,C) in point row order, point) -> (N,C). Uses row ``order_index`` of the stage's
    serialization (``point["serialized_order"]`` / ``["serialized_inverse"]``)."""

    def __init__(self, channels, num_heads, patch_size, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0,
                 order_index=0, enable_flash=False, upcast_attention=False, upcast_softmax=False):
        super().__init__()
        assert channels % num_heads == 0, "channels must be divisible by num_heads"
        self.channels, self.num_heads, self.patch_size, self.order_index = channels, num_heads, patch_size, order_index
        self.scale = qk_scale or (channels // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.enable_flash = enable_flash
        self.upcast_attention = upcast_attention
        self.qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, feat: torch.Tensor, point) -> torch.Tensor:
        qkv = self.qkv(feat)
        plan = get_plan(point, self.patch_size)
        drop = self.attn_drop if self.training else 0.0
        flash = _flash_varlen() if (self.enable_flash and qkv.is_cuda) else None
        if flash is not None:  # pragma: no cover (CUDA + flash-attn only)
            order = point["serialized_order"][self.order_index]
            inverse = point["serialized_inverse"][self.order_index]
            out = _flash_forward(flash, qkv[order], plan, self.num_heads, self.scale, drop)[inverse]
        else:
            dtype = qkv.dtype
            if self.upcast_attention:
                qkv = qkv.float()
            gather, src = composed_indices(point, plan, self.order_index)
            out = patch_attention(qkv, plan, self.num_heads, self.scale, drop, gather, src).to(dtype)
        return self.proj_drop(self.proj(out))


def _flash_forward(flash, qkv, plan, num_heads, scale, drop):  # pragma: no cover
    """flash-attn varlen on the same sequences (qkv gathered per sequence, bf16 as in the reference)."""
    seqs, lens = [], []
    if plan.full_idx is not None:
        seqs.append(plan.full_idx.reshape(-1))
        lens += [plan.k] * plan.full_idx.shape[0]
    if plan.small_idx is not None:
        mask = plan.small_mask if plan.small_mask is not None else torch.ones_like(plan.small_idx, dtype=torch.bool)
        seqs.append(plan.small_idx[mask])
        lens += mask.sum(1).tolist()
    idx = torch.cat(seqs)
    n, c3 = qkv.shape
    c = c3 // 3
    x = qkv[idx].view(-1, 3, num_heads, c // num_heads)
    cu = torch.tensor([0] + lens, device=qkv.device).cumsum(0).int()
    o = flash(x.bfloat16(), cu, max(lens), dropout_p=drop, softmax_scale=scale).reshape(-1, c).to(qkv.dtype)
    # rows of o follow idx; map the plan's src (defined on the padded small layout) to compact rows
    n_full = plan.full_idx.numel() if plan.full_idx is not None else 0
    if plan.small_idx is not None:
        mask = plan.small_mask if plan.small_mask is not None else torch.ones_like(plan.small_idx, dtype=torch.bool)
        compact = torch.full((plan.small_idx.numel(),), -1, dtype=torch.long, device=qkv.device)
        compact[mask.reshape(-1)] = torch.arange(int(mask.sum()), device=qkv.device) + n_full
        remap = torch.cat([torch.arange(n_full, device=qkv.device), compact])
        return o[remap[plan.src]]
    return o[plan.src]
