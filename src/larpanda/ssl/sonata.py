"""Sonata-v1m1 self-distillation as used by Panda (docs/model.md §2.3, docs/model.md §2.4, docs/model.md §2.5).

`SonataTask` is a `larpanda.train.fit` task: student {backbone, mask_head, unmask_head} and an EMA
teacher (same modules, drop_path 0, no grads). Per step:

1. mask the two global views (grid patches, `views.generate_mask`), jitter masked coordinates;
2. teacher: unmasked global views → backbone → up-cast 2 levels ([f2|f3|f4], 1088-d for panda-base)
   → teacher heads; student: masked global views → mask_head, local views → unmask_head;
3. match points by 1-NN on ``origin_coord`` within 0.002 per segment (scipy cKDTree, CPU);
4. targets = Sinkhorn-Knopp(teacher logits / T_t, 3 iterations), predictions log_softmax(logits / 0.1);
5. loss = 0.25·mask + 0.25·roll + 0.5·unmask, each a per-view mean then mean over views.

Monitors (logged every step): each loss term, prototype-usage entropy of the teacher assignments
(normalized by log K: 1 = uniform use, 0 = collapse to one prototype), teacher/student feature std.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import nn

from ..data.point import Point, offset2batch, offset2bincount
from ..nn.ptv3 import PointTransformerV3, upcast
from ..train import distributed as D
from ..train import schedules as S
from .views import collate_views, generate_mask, jitter_masked

GRID_SIZE = 0.001

DEFAULTS = dict(
    num_prototypes=4096, head_hidden=4096, head_embed=256, up_cast_level=2,
    mask_loss_weight=0.25, roll_mask_loss_weight=0.25, unmask_loss_weight=0.5,
    momentum_base=0.994, momentum_final=1.0,
    teacher_temp_start=0.04, teacher_temp_base=0.07, teacher_temp_warmup=0.05, student_temp=0.1,
    mask_size_start=0.01, mask_size_base=0.075, mask_ratio_start=0.5, mask_ratio_base=0.9, mask_warmup=0.05,
    mask_jitter=GRID_SIZE / 2, match_max_r=2 * GRID_SIZE, sinkhorn_iters=3,
    num_global_view=2, num_local_view=6,
)


class OnlineCluster(nn.Module):
    """Linear(C→hidden), GELU, Linear(hidden→embed), L2-normalize, weight-normalized Linear(embed→K, no
    bias) with g frozen at 1: logits are cosine similarities to K prototypes (docs/model.md §2.3)."""

    def __init__(self, in_channels: int, hidden: int = 4096, embed: int = 256, num_prototypes: int = 4096):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.GELU(), nn.Linear(hidden, embed))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.prototype = nn.utils.parametrizations.weight_norm(nn.Linear(embed, num_prototypes, bias=False))
        g = self.prototype.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(False)

    def embed(self, feat: torch.Tensor) -> torch.Tensor:
        x = self.mlp(feat)
        return F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype == torch.float16 else 1e-12)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.prototype(self.embed(feat))


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temp: float, num_iter: int = 3) -> torch.Tensor:
    """(n, K) teacher logits → (n, K) soft assignments, rows summing to 1, prototypes equipartitioned.
    Sums are all-reduced over ranks (docs/model.md §2.4); computed in float32."""
    q = torch.exp(logits.float() / temp).t()  # (K, n)
    n = D.all_reduce_sum(torch.tensor([float(q.shape[1])], device=q.device)).item()
    k = q.shape[0]
    q = q / D.all_reduce_sum(q.sum().reshape(1))
    for _ in range(num_iter):
        q = q / D.all_reduce_sum(q.sum(dim=1, keepdim=True)) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).t()


@torch.no_grad()
def match_neighbour(q_coord, q_offset, t_coord, t_offset, max_r: float) -> torch.Tensor:
    """For every query point, its nearest target point of the same segment (``offset`` splits both sets
    into the same number of segments); pairs with distance < ``max_r`` are kept. Returns (M, 2) int64
    [query row, target row]. CPU cKDTree per segment (replaces pointops.knn_query)."""
    qc, tc = q_coord.detach().float().cpu().numpy(), t_coord.detach().float().cpu().numpy()
    qo = [0] + q_offset.tolist()
    to = [0] + t_offset.tolist()
    assert len(qo) == len(to), "match_neighbour: query and target need the same number of segments"
    pairs = []
    for s in range(len(qo) - 1):
        q0, q1, t0, t1 = qo[s], qo[s + 1], to[s], to[s + 1]
        if q1 == q0 or t1 == t0:
            continue
        dist, idx = cKDTree(tc[t0:t1]).query(qc[q0:q1], k=1)
        keep = np.flatnonzero(dist < max_r)
        pairs.append(np.stack([keep + q0, idx[keep] + t0], axis=1))
    out = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return torch.from_numpy(out.astype(np.int64)).to(q_coord.device)


def segment_mean_loss(per_point: torch.Tensor, segment: torch.Tensor) -> torch.Tensor:
    """Mean over points per segment (segment_coo "mean": empty segments below the max give 0), then
    mean over segments."""
    if per_point.numel() == 0:
        return per_point.sum() * 0.0
    ns = int(segment.max()) + 1
    s = per_point.new_zeros(ns).index_add(0, segment, per_point)
    c = torch.bincount(segment, minlength=ns).to(per_point.dtype)
    return (s / c.clamp(min=1)).mean()


def roll_views(point: Point, n: int = 2) -> Point:
    """Swap the two global views of every event: [v0, v1, v0', v1'] → [v1, v0, v1', v0']."""
    counts = offset2bincount(point.offset).tolist()
    b = len(counts) // n
    order = [v for e in range(b) for v in reversed(range(e * n, (e + 1) * n))]
    out = Point()
    for key in ("feat", "coord", "origin_coord"):
        parts = point[key].split(counts)
        out[key] = torch.cat([parts[i] for i in order])
    out.offset = torch.cumsum(torch.tensor([counts[i] for i in order], device=point.offset.device), 0)
    out.batch = offset2batch(out.offset)
    return out


def prototype_entropy(logits: torch.Tensor) -> float:
    """Normalized entropy of the argmax-prototype histogram (1: uniform, 0: one prototype)."""
    if logits.numel() == 0:
        return float("nan")
    k = logits.shape[1]
    h = torch.bincount(logits.argmax(1), minlength=k).float()
    p = h / h.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum() / np.log(k))


class SonataTask(nn.Module):
    """Student/teacher self-distillation task for `larpanda.train.fit` (docs/model.md §2).

    Args:
        backbone: PointTransformerV3 kwargs (enc_mode and mask_token are forced on).
        **kwargs: overrides of `DEFAULTS` (prototypes, head sizes, loss weights, schedules).
    """

    def __init__(self, backbone: dict, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"SonataTask: unknown options {sorted(unknown)}")
        self.cfg = {**DEFAULTS, **kwargs}
        bcfg = {**backbone, "enc_mode": True, "mask_token": True}
        self.backbone_config = bcfg
        ch = list(bcfg["enc_channels"])
        in_ch = sum(ch[-(self.cfg["up_cast_level"] + 1):])
        head = dict(in_channels=in_ch, hidden=self.cfg["head_hidden"], embed=self.cfg["head_embed"],
                    num_prototypes=self.cfg["num_prototypes"])
        self.student = nn.ModuleDict({"backbone": PointTransformerV3(**bcfg),
                                      "mask_head": OnlineCluster(**head), "unmask_head": OnlineCluster(**head)})
        self.teacher = nn.ModuleDict({"backbone": PointTransformerV3(**{**bcfg, "drop_path": 0.0}),
                                      "mask_head": OnlineCluster(**head), "unmask_head": OnlineCluster(**head)})
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.collate_fn = collate_views
        self.setup(1)

    # ------------------------------------------------------------------ schedules (docs/model.md §2.2, docs/model.md §2.5)
    def setup(self, total_steps: int) -> None:
        c, t = self.cfg, int(total_steps)
        self.total_steps = t
        self.sched = {
            "momentum": S.cosine(c["momentum_base"], c["momentum_final"], t),
            "teacher_temp": S.cosine(c["teacher_temp_base"], c["teacher_temp_base"], t, int(t * c["teacher_temp_warmup"]), c["teacher_temp_start"]),
            "mask_size": S.cosine(c["mask_size_base"], c["mask_size_base"], t, int(t * c["mask_warmup"]), c["mask_size_start"]),
            "mask_ratio": S.cosine(c["mask_ratio_base"], c["mask_ratio_base"], t, int(t * c["mask_warmup"]), c["mask_ratio_start"]),
        }

    def _at(self, name, step):
        a = self.sched[name]
        return float(a[min(max(int(step), 0), len(a) - 1)])

    def param_groups(self, tcfg) -> list[dict]:
        from ..train.optim import param_groups

        return param_groups(self.student, float(tcfg["lr"]), float(tcfg["weight_decay"]), float(tcfg["layer_decay"]))

    # ------------------------------------------------------------------------------- forward pieces
    def _encode(self, net: nn.ModuleDict, point: Point) -> Point:
        out = net["backbone"](point, upcast=False)
        return upcast(out, self.cfg["up_cast_level"])

    def training_step(self, batch, step: int):
        c = self.cfg
        T_t, T_s = self._at("teacher_temp", step), c["student_temp"]
        gs = GRID_SIZE
        g = Point(feat=batch["global_feat"], coord=batch["global_coord"], origin_coord=batch["global_origin_coord"],
                  offset=batch["global_offset"], grid_size=gs)
        mask, _ = generate_mask(g.coord, g.offset, self._at("mask_size", step), self._at("mask_ratio", step))
        mg = Point(feat=g.feat, coord=jitter_masked(g.coord, mask, c["mask_jitter"]), origin_coord=g.origin_coord,
                   mask=mask, offset=g.offset, grid_size=gs)
        loc = Point(feat=batch["local_feat"], coord=batch["local_coord"], origin_coord=batch["local_origin_coord"],
                    offset=batch["local_offset"], grid_size=gs)
        with torch.no_grad():
            tg = self._encode(self.teacher, g)
            t_feat = tg.feat
            t_mask = self.teacher["mask_head"](t_feat)
            t_unmask = self.teacher["unmask_head"](t_feat)
        logs, total = {}, 0.0
        sm = self._encode(self.student, mg)
        s_mask = self.student["mask_head"](sm.feat)
        r = c["match_max_r"]
        # mask loss: masked view v vs the same unmasked view v
        idx = match_neighbour(sm.origin_coord, sm.offset, tg.origin_coord, tg.offset, r)
        q = sinkhorn_knopp(t_mask[idx[:, 1]], T_t, c["sinkhorn_iters"])
        l_mask = segment_mean_loss(-(q * F.log_softmax(s_mask[idx[:, 0]].float() / T_s, -1)).sum(-1), sm.batch[idx[:, 0]])
        # roll loss: masked view v vs the other global view of the same event
        tr = roll_views(Point(feat=t_mask, coord=tg.coord, origin_coord=tg.origin_coord, offset=tg.offset), c["num_global_view"])
        idx_r = match_neighbour(sm.origin_coord, sm.offset, tr.origin_coord, tr.offset, r)
        q_r = sinkhorn_knopp(tr.feat[idx_r[:, 1]], T_t, c["sinkhorn_iters"])
        l_roll = segment_mean_loss(-(q_r * F.log_softmax(s_mask[idx_r[:, 0]].float() / T_s, -1)).sum(-1), sm.batch[idx_r[:, 0]])
        # unmask loss: local views (student unmask head) vs the principal global view (teacher unmask head)
        sl = self._encode(self.student, loc)
        s_unmask = self.student["unmask_head"](sl.feat)
        nv, nl = c["num_global_view"], c["num_local_view"]
        principal = tg.batch % nv == 0
        p_off = torch.cumsum(torch.bincount(tg.batch[principal] // nv), 0)
        idx_u = match_neighbour(sl.origin_coord, sl.offset[nl - 1 :: nl], tg.origin_coord[principal], p_off, r)
        q_u = sinkhorn_knopp(t_unmask[principal][idx_u[:, 1]], T_t, c["sinkhorn_iters"])
        l_unmask = segment_mean_loss(-(q_u * F.log_softmax(s_unmask[idx_u[:, 0]].float() / T_s, -1)).sum(-1), sl.batch[idx_u[:, 0]])
        total = c["mask_loss_weight"] * l_mask + c["roll_mask_loss_weight"] * l_roll + c["unmask_loss_weight"] * l_unmask
        with torch.no_grad():
            logs = {
                "mask_loss": float(l_mask), "roll_mask_loss": float(l_roll), "unmask_loss": float(l_unmask),
                "proto_entropy": prototype_entropy(t_mask),
                "student_proto_entropy": prototype_entropy(s_mask.detach()),
                "teacher_feat_std": float(t_feat.float().std(0).mean()),
                "student_feat_std": float(sm.feat.detach().float().std(0).mean()),
                "teacher_embed_std": float(self.teacher["mask_head"].embed(t_feat).float().std(0).mean()),
                "matched_frac": float(len(idx) / max(1, sm.feat.shape[0])),
                "masked_frac": float(mask.float().mean()), "teacher_temp": T_t,
                "mask_size": self._at("mask_size", step), "mask_ratio": self._at("mask_ratio", step),
                "momentum": self._at("momentum", step),
            }
        return total, logs

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """EMA: t ← m·t + (1−m)·s over all student parameters, m cosine 0.994 → 1 (docs/model.md §2.5)."""
        m = self._at("momentum", step)
        t = list(self.teacher.parameters())
        s = list(self.student.parameters())
        torch._foreach_mul_(t, m)
        torch._foreach_add_(t, s, alpha=1 - m)

    # ------------------------------------------------------------------------------------------ export
    def backbone_module(self, which: str = "student") -> PointTransformerV3:
        if which not in ("teacher", "student"):
            raise ValueError("which must be 'teacher' or 'student'")
        return getattr(self, which)["backbone"]

    def export_backbone(self, out_dir, which: str = "student"):
        """Write ``out_dir/{model.safetensors,config.json}`` (task "backbone") via `larpanda.io.save_model`.

        The student is the default, as in the reference: downstream configs load ``module.student.backbone``
        and Panda's raw-checkpoint loader picks ``module.student`` too (docs/model.md §2.6). It is also the
        better representation after a short run (docs/benchmarks.md "Pretraining": the EMA teacher lags
        while its momentum climbs to 1). The teacher is exported with the student's drop_path."""
        from ..io.checkpoints import build_backbone, save_model

        model = build_backbone(**self.backbone_config)
        model.load_state_dict(self.backbone_module(which).state_dict())
        return save_model(model, out_dir)
