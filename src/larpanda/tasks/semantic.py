"""Semantic segmentation (5 motif classes) on the Panda backbone, plus the UResNet baseline (spec-model §3).

Modes (spec-model §3 table; §1.1 "Downstream backbone configs"):

* ``linear``  frozen encoder (enc_mode=True), full up-cast features (Σ enc_channels = 1232 for panda-base),
  ``seg_head`` = Linear(1232, 5).
* ``decoder`` frozen embedding + encoder, trainable PTv3 decoder (dec depths (2,2,2,2), channels
  (64,96,192,384), heads (4,6,12,24), patch 256) and ``seg_head`` = Linear(64, 5).
* ``full``    as decoder, everything trainable; encoder block lr = lr·0.9^((N_enc − idx − 1) + N_dec)·0.05,
  decoder block ``dec{e}.block{b}`` lr = lr·0.9^(N_dec − 1 − Σdec_depths[:e] − b), the rest at lr.
* ``scratch`` as full, random initialisation (inherits the 0.05 encoder multiplier, spec-model §7 item 13).
* ``uresnet`` the sparse UResNet baseline (`larpanda.nn.uresnet`, issue 11), ``seg_head`` = Linear(filters, 5).

Loss: cross-entropy (optional class weights, ignore −1) + 0.05 · Lovász-softmax (classes present,
pooled over the batch, ignore −1). State-dict keys are ``backbone.*`` and ``seg_head.*``, as in the official
``panda_semantic.pth`` (spec-model §3, §5), so that file loads with strict keys.

Deviation (documented): frozen parts run in eval mode (no DropPath, deterministic), where pimm keeps
them in train mode (spec-model §7 item 12).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

MODES = ("linear", "decoder", "full", "scratch", "uresnet")
NUM_CLASSES = 5
PANDA_DECODER = dict(dec_depths=(2, 2, 2, 2), dec_channels=(64, 96, 192, 384), dec_num_head=(4, 6, 12, 24),
                     dec_patch_size=(256, 256, 256, 256))


# ----------------------------------------------------------------------------------------- losses


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors (Berman et al. 2018)."""
    p = gt_sorted.numel()
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if p > 1:
        jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
    return jaccard


def lovasz_softmax(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1, classes: str = "present") -> torch.Tensor:
    """Multiclass Lovász-softmax loss. probs (N, C) softmax outputs, labels (N,) int64 (pimm LovaszLoss,
    mode "multiclass", per_image False). Returns a scalar (0 if no valid point)."""
    valid = labels != ignore_index
    probs, labels = probs[valid], labels[valid]
    if probs.numel() == 0:
        return probs.sum() * 0.0
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[perm])))
    if not losses:
        return probs.sum() * 0.0
    return torch.stack(losses).mean()


def semantic_loss(logits, labels, class_weights=None, lovasz_weight: float = 0.05, ignore_index: int = -1):
    """CE + lovasz_weight · Lovász-softmax (spec-model §3 "Losses"). Returns (total, ce, lovasz)."""
    w = None if class_weights is None else torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if (labels != ignore_index).any():
        ce = F.cross_entropy(logits, labels, weight=w, ignore_index=ignore_index)
    else:
        ce = logits.sum() * 0.0
    lov = lovasz_softmax(F.softmax(logits, dim=1), labels, ignore_index) if lovasz_weight else logits.sum() * 0.0
    return ce + lovasz_weight * lov, ce, lov


# ------------------------------------------------------------------------------------------ model


def decoder_kwargs(backbone_kwargs: dict) -> dict:
    """PTv3 decoder kwargs for the semantic dec/fft/scratch modes: the backbone config's own ``dec_*`` when it
    has one stage per encoder down-sampling (the model presets carry the Panda values (2,2,2,2),
    (64,96,192,384), (4,6,12,24), 256; spec-model §1.1); the Panda values whenever the encoder is Panda's
    (official base configs may carry the unused code-default dec_*); else the encoder's widths/heads."""
    enc_ch = list(backbone_kwargs.get("enc_channels", (48, 96, 192, 384, 512)))
    n = len(enc_ch) - 1
    keys = ("dec_depths", "dec_channels", "dec_num_head", "dec_patch_size")
    if tuple(enc_ch) == (48, 96, 192, 384, 512):  # the Panda encoder: always the paper's decoder
        return dict(PANDA_DECODER)
    if all(k in backbone_kwargs and len(backbone_kwargs[k]) == n for k in keys):
        return {k: tuple(backbone_kwargs[k]) for k in keys}
    heads = list(backbone_kwargs.get("enc_num_head", [max(1, c // 16) for c in enc_ch]))
    patch = list(backbone_kwargs.get("enc_patch_size", [256] * len(enc_ch)))
    return dict(dec_depths=tuple([2] * n), dec_channels=tuple(enc_ch[:n]), dec_num_head=tuple(heads[:n]),
                dec_patch_size=tuple(patch[:n]))


def backbone_kwargs_for_mode(backbone: dict, mode: str) -> dict:
    """Official PTv3 kwargs of the semantic backbone for ``mode`` (spec-model §1.1)."""
    kw = dict(backbone)
    kw["mask_token"] = False
    kw["layer_scale"] = 0.0
    if mode == "linear":
        kw["enc_mode"] = True
        kw["traceable"] = True
    else:
        kw["enc_mode"] = False
        kw["traceable"] = False
        kw.update(decoder_kwargs(backbone))
        kw["freeze_encoder"] = False  # freezing is done here, by requires_grad (decoder mode)
    return kw


class SemanticModel(nn.Module):
    """Per-point 5-class motif segmentation.

    Args:
        mode: one of MODES.
        backbone: PTv3 kwargs (official names) of the encoder (ignored for uresnet).
        uresnet: kwargs of `larpanda.nn.uresnet.UResNet` plus ``in_coords`` (bool) for mode uresnet.
        class_weights: optional (5,) CE weights; lovasz_weight: 0.05 (spec-model §3).
        energy_threshold: the cut used by `predict`/`embed` (0.13 MeV, spec-data §6).
    """

    def __init__(self, mode: str, backbone: dict | None = None, uresnet: dict | None = None,
                 num_classes: int = NUM_CLASSES, class_weights=None, lovasz_weight: float = 0.05,
                 energy_threshold: float = 0.13):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"semantic mode {mode!r}: choose from {', '.join(MODES)}")
        self.mode, self.num_classes = mode, num_classes
        self.class_weights = None if class_weights is None else [float(x) for x in class_weights]
        self.lovasz_weight, self.energy_threshold = float(lovasz_weight), float(energy_threshold)
        if mode == "uresnet":
            from ..nn.uresnet import UResNet

            ucfg = dict(uresnet or {})
            self.in_coords = bool(ucfg.pop("in_coords", False))
            ucfg.pop("preset", None)
            self.backbone = UResNet(in_channels=4 if self.in_coords else 1, num_classes=0, **ucfg)
            self.backbone_kwargs = None
            self.uresnet_kwargs = {**ucfg, "in_coords": self.in_coords}
            width = self.backbone.filters
        else:
            from ..nn.ptv3 import PointTransformerV3

            if backbone is None:
                raise UserError(f"semantic mode {mode}: backbone kwargs are required")
            self.backbone_kwargs = backbone_kwargs_for_mode(backbone, mode)
            self.uresnet_kwargs = None
            self.backbone = PointTransformerV3(**self.backbone_kwargs)
            kw = self.backbone_kwargs
            width = sum(kw["enc_channels"]) if mode == "linear" else kw["dec_channels"][0]
        self.seg_head = nn.Linear(width, num_classes)
        self._apply_freeze()

    # --- structure ---------------------------------------------------------------------------------
    def frozen_prefixes(self) -> tuple[str, ...]:
        if self.mode == "linear":
            return ("backbone.",)
        if self.mode == "decoder":
            return ("backbone.embedding.", "backbone.enc.")
        return ()

    def _apply_freeze(self) -> None:
        prefixes = self.frozen_prefixes()
        for name, p in self.named_parameters():
            if prefixes and name.startswith(prefixes):
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.mode == "linear":
            self.backbone.eval()
        elif mode and self.mode == "decoder":
            for name in ("embedding", "enc"):
                sub = getattr(self.backbone, name, None)
                if sub is not None:
                    sub.eval()
        return self

    @property
    def config(self) -> dict:
        return {
            "task": "semantic",
            "mode": self.mode,
            "backbone": self.backbone_kwargs,
            "uresnet": self.uresnet_kwargs,
            "num_classes": self.num_classes,
            "class_weights": self.class_weights,
            "lovasz_weight": self.lovasz_weight,
            "energy_threshold": self.energy_threshold,
            "class_names": ["shower", "track", "michel", "delta", "led"],
        }

    # --- forward ------------------------------------------------------------------------------------
    def features(self, point) -> torch.Tensor:
        """(N, C) per-point features before ``seg_head``, in the input rows' order."""
        if self.mode == "uresnet":
            from ..nn.uresnet import batch_coords

            point.ensure_batch()
            feat = point["feat"] if self.in_coords else point["energy"]
            return self.backbone(feat.float(), batch_coords(point["grid_coord"], point["batch"]))
        inp = type(point)({k: point[k] for k in ("coord", "grid_coord", "feat", "offset") if k in point})
        if self.mode == "linear":
            with torch.no_grad():
                out = self.backbone(inp, upcast=True)
            return out["feat"].detach()
        out = self.backbone(inp)
        return out["feat"]

    def forward(self, point) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.seg_head(self.features(point))

    def training_step(self, batch, step: int):
        logits = self(batch)
        labels = batch["segment_motif"].long()
        loss, ce, lov = semantic_loss(logits, labels, self.class_weights, self.lovasz_weight)
        with torch.no_grad():
            valid = labels >= 0
            acc = (logits.argmax(1)[valid] == labels[valid]).float().mean() if valid.any() else torch.tensor(0.0)
        return loss, {"ce": float(ce.detach()), "lovasz": float(lov.detach()), "acc": float(acc)}

    def param_groups(self, cfg: dict) -> list[dict]:
        """Trainer groups ``{"params", "name", "lr_scale", "apply_wd"}`` (see `larpanda.train.optim`),
        with the spec-model §3 layer-wise lr rules."""
        from ..train.optim import no_weight_decay

        decay = float(cfg.get("layer_decay") or 1.0) if "layer_decay" in cfg else 0.9
        enc_mult = float(getattr(self, "encoder_lr_mult", 0.05))
        scales = {}
        if self.mode in ("decoder", "full", "scratch"):
            kw = self.backbone_kwargs
            dd, ed = list(kw["dec_depths"]), list(kw["enc_depths"])
            n_dec, n_enc = sum(dd), sum(ed)
        groups: dict = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            scale = 1.0
            parts = name.split(".")
            if self.mode in ("decoder", "full", "scratch") and len(parts) > 4 and parts[0] == "backbone":
                if parts[1] == "dec" and parts[3].startswith("block"):
                    e, b = int(parts[2][3:]), int(parts[3][5:])
                    scale = decay ** (n_dec - 1 - sum(dd[:e]) - b)
                elif parts[1] == "enc" and parts[3].startswith("block"):
                    e, b = int(parts[2][3:]), int(parts[3][5:])
                    idx = sum(ed[:e]) + b
                    scale = decay ** ((n_enc - idx - 1) + n_dec) * enc_mult
            apply_wd = not no_weight_decay(name, p)
            key = (round(scale, 12), apply_wd)
            g = groups.setdefault(key, {"params": [], "name": f"lr{scale:.4g}{'_wd' if apply_wd else ''}",
                                        "lr_scale": scale, "apply_wd": apply_wd})
            g["params"].append(p)
            scales[name] = scale
        self._lr_scales = scales
        return list(groups.values())

    # --- inference on one event ---------------------------------------------------------------------
    def _prepared(self, event):
        """(prepared dict, collated Point); raises `io.memory.InferenceMemoryError` for an event above
        the inference memory limit, before any forward pass."""
        from ..data.point import collate
        from ..data.transforms import prepare
        from ..io.memory import check_model

        d = prepare(event, energy_threshold=self.energy_threshold)
        check_model(self, d, source=event.source)
        return d, collate([d])

    def empty_prediction(self, n: int) -> dict:
        """`predict`'s output for an event of ``n`` rows none of which is predicted (all removed)."""
        return {"semantic": np.full(n, -1, np.int64), "semantic_probs": np.zeros((n, self.num_classes), np.float32)}

    @torch.no_grad()
    def predict(self, event) -> dict:
        """Per raw row: ``semantic`` (N,) int64 (−1 for rows removed by the energy cut) and
        ``semantic_probs`` (N, 5) float32 (0 for removed rows)."""
        n = len(event)
        out = self.empty_prediction(n)
        labels, out_probs = out["semantic"], out["semantic_probs"]
        if n == 0 or not (event.energy > self.energy_threshold).any():  # nothing survives the cut
            return out
        was = self.training
        self.eval()
        try:
            d, point = self._prepared(event)
            dev = next(self.parameters()).device
            logits = self(point.to(dev)).float().cpu()
        finally:
            self.train(was)
        probs = torch.softmax(logits, 1).numpy()
        labels[d["index"]] = probs.argmax(1)
        out_probs[d["index"]] = probs
        return {"semantic": labels, "semantic_probs": out_probs}

    @torch.no_grad()
    def embed(self, event) -> np.ndarray:
        """(N_after_cut, C) features before ``seg_head``, rows in raw-event order of the kept points."""
        from .common import embed_event

        return embed_event(self, event)


def model_from_config(cfg: dict) -> SemanticModel:
    """Build a `SemanticModel` from a weights ``config.json`` dict (task "semantic") for `io.load_model`.

    Also accepts the official ``panda_semantic.pth`` config (``official: true``; Segmenter kwargs
    ``num_classes``, ``backbone`` with a ``type`` key, ``freeze_backbone``, ``mlp_head``; spec-model §5):
    enc_mode → ``linear``, otherwise ``full`` (decoder and full share one layout)."""
    if cfg.get("official"):
        from ..nn import ptv3

        if cfg.get("mlp_head"):
            raise UserError("official semantic checkpoint with mlp_head=True is not supported (Panda uses False)")
        allowed = set(ptv3.OFFICIAL_DEFAULTS) | set(getattr(ptv3, "_UNSUPPORTED", {}))
        bb = {k: v for k, v in dict(cfg["backbone"]).items() if k in allowed}
        mode = "linear" if bb.get("enc_mode", False) else "full"
        return SemanticModel(mode, backbone=bb, num_classes=int(cfg.get("num_classes", NUM_CLASSES)))
    return SemanticModel(
        cfg.get("mode", "full"), backbone=cfg.get("backbone"), uresnet=cfg.get("uresnet"),
        num_classes=cfg.get("num_classes", NUM_CLASSES), class_weights=cfg.get("class_weights"),
        lovasz_weight=cfg.get("lovasz_weight", 0.05), energy_threshold=cfg.get("energy_threshold", 0.13))


def official_key_names(model: SemanticModel) -> list[str]:
    """Keys of the official ``panda_semantic.pth`` state dict for this architecture (``backbone.*``,
    ``seg_head.*``; spec-model §3/§5)."""
    return list(model.state_dict().keys())


def load_official_state_dict(model: SemanticModel, state_dict: dict) -> None:
    """Load an official Panda semantic ``state_dict`` with strict keys (a ``module.`` prefix is stripped)."""
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    own = model.state_dict()
    wrong = [k for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise UserError(f"semantic checkpoint does not match the {model.mode} model: shape of {wrong[0]} is "
                        f"{tuple(sd[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)} ({len(wrong)} mismatches)")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f"semantic checkpoint does not match the {model.mode} model: "
                        f"missing {missing[:3]}{'...' if len(missing) > 3 else ''} ({len(missing)}), "
                        f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''} ({len(unexpected)})")


# ------------------------------------------------------------------------------------------- runs


def weights_task(path) -> str:
    """The ``task`` recorded in a weights' ``config.json`` ("backbone", "semantic", "panoptic")."""
    from .common import read_weights_config

    cfg = read_weights_config(path)
    if "task" not in cfg:
        p = str(path)
        if p.endswith(".pth"):
            return "semantic" if "semantic" in Path(p).name else ("panoptic" if any(
                w in Path(p).name for w in ("particle", "interaction")) else "backbone")
        raise UserError(f"{path}: no config.json with a 'task' entry; pass --task")
    return cfg["task"]


def pretrained_backbone(path) -> tuple[dict, dict]:
    """(PTv3 kwargs, backbone state_dict) of pretrained weights (larpanda weights dir or Panda .pth)."""
    from .common import find_weights, read_weights_config

    p = find_weights(path)
    try:
        from ..io import load_model
    except ImportError:
        load_model = None
    if load_model is None:  # larpanda.io not available: read the documented layout directly
        from safetensors.torch import load_file

        cfg = read_weights_config(p)
        if cfg.get("task", "backbone") != "backbone" or not p.is_dir():
            raise UserError(f"{path}: expected backbone weights (dir with model.safetensors + config.json)")
        return dict(cfg["backbone"]), load_file(str(p / "model.safetensors"))
    model = load_model(str(p))
    cfg = getattr(model, "config", {}) or {}
    if cfg.get("task", "backbone") == "backbone":
        return dict(cfg["backbone"]), model.state_dict()
    # a task model: take its backbone
    sd = {k[len("backbone."):]: v for k, v in model.state_dict().items() if k.startswith("backbone.")}
    return dict(cfg["backbone"]), sd


def load_backbone_into(model: SemanticModel, state_dict: dict) -> dict:
    """Load pretrained encoder weights; every encoder/embedding key must load (decoder keys may be absent)."""
    sd = {k: v for k, v in state_dict.items() if k != "embedding.mask_token"}
    missing, unexpected = model.backbone.load_state_dict(sd, strict=False)
    bad_missing = [k for k in missing if not k.startswith("dec.")]
    if bad_missing or unexpected:
        raise UserError(f"pretrained backbone does not match: missing {bad_missing[:3]} ({len(bad_missing)}), "
                        f"unexpected {list(unexpected)[:3]} ({len(unexpected)})")
    return {"loaded": len(sd), "missing_decoder": len(missing)}


def build_semantic_model(mode: str, cfg: dict, weights=None) -> SemanticModel:
    """Model for a training run: pretrained encoder for linear/decoder/full, preset for scratch/uresnet."""
    head = cfg.get("head", {})
    common = dict(num_classes=head.get("num_classes", NUM_CLASSES), class_weights=head.get("class_weights"),
                  lovasz_weight=head.get("lovasz_weight", 0.05),
                  energy_threshold=cfg.get("data", {}).get("energy_threshold", 0.13))
    if mode == "uresnet":
        from ..nn.uresnet import PRESETS

        ucfg = dict(cfg.get("uresnet", {}))
        preset = ucfg.pop("preset", "uresnet-base")
        model = SemanticModel("uresnet", uresnet={**PRESETS[preset], **ucfg}, **common)
    elif mode == "scratch" or weights is None:
        if mode != "scratch":
            raise UserError(f"--mode {mode} needs pretrained --weights (or use --mode scratch)")
        from ..config import load_config

        preset = cfg.get("model", {}).get("preset", "small")
        bb = load_config(preset, "model")
        model = SemanticModel("scratch", backbone=bb, **common)
    else:
        bb, sd = pretrained_backbone(weights)
        model = SemanticModel(mode, backbone=bb, **common)
        model.load_report = load_backbone_into(model, sd)
    model.encoder_lr_mult = float(cfg.get("optim", {}).get("encoder_lr_mult", 0.05))
    return model


def evaluate_model(model, dataset, batch_size: int = 4, max_events=None, exclude=(), device="cpu") -> dict:
    """Pooled spec-data §6.1 metrics of ``model`` on ``dataset`` (after the energy cut)."""
    from ..metrics.semantic import SemanticAccumulator

    acc = SemanticAccumulator(num_classes=model.num_classes, exclude=exclude)
    was = model.training
    model.eval()
    n_events, t0 = 0, time.perf_counter()
    from .common import iterate_batches, skipped_list

    skipped = skipped_list(dataset)
    k0 = len(skipped)
    with torch.no_grad():
        for batch in iterate_batches(dataset, batch_size, max_events, model=model):
            logits = model(batch.to(device))
            acc.update(logits.argmax(1).cpu(), batch["segment_motif"])
            n_events += batch.num_events
    model.train(was)
    out = acc.compute()
    out["num_events"] = n_events
    out["skipped_events"] = len(skipped) - k0  # bad events and events above the inference limits
    out["seconds_per_event"] = (time.perf_counter() - t0) / max(1, n_events)
    return out


def _eval_fn(batch_size=4, max_events=None):
    def fn(task, val_dataset):
        m = evaluate_model(task, val_dataset, batch_size, max_events)
        return {k: v for k, v in m.items() if isinstance(v, float)}
    return fn


def run_train(args) -> dict:
    """``larpanda train semantic``: label subset → fit → ``OUT/weights`` + ``OUT/val_metrics.json``."""
    from ..atomic import atomic_write_json
    from ..train import fit
    from .common import labelled_dataset, load_task_config

    cfg = load_task_config("semantic", args.config, args.overrides, default=args.mode)
    seed = int(args.seed if args.seed is not None else cfg.get("train", {}).get("seed", 0))
    cfg.setdefault("train", {})["seed"] = seed
    if getattr(args, "quiet", False):
        cfg["train"]["progress"] = False
    data_cfg = cfg.get("data", {})
    full = make_dataset_for(args.data, data_cfg, train=True, seed=seed, max_events=args.max_events)
    train_set = labelled_dataset(full, args.label_fraction, seed)
    val_set = make_dataset_for(args.val_data, data_cfg, train=False) if args.val_data else None
    if len(train_set) < int(cfg["train"].get("batch_size", 4)):
        # tiny label fractions (e.g. 1 event): the batch is the whole labelled set
        cfg["train"]["batch_size"] = len(train_set)
    weights = args.weights
    if args.mode in ("scratch", "uresnet") and weights:
        raise UserError(f"--mode {args.mode} trains from random initialisation; drop --weights")
    model = build_semantic_model(args.mode, cfg, weights)
    cfg["run"] = {"mode": args.mode, "label_fraction": float(args.label_fraction), "labelled_events": len(train_set),
                  "available_events": len(full), "weights": weights, "seed": seed}
    result = fit(model, train_set, cfg, args.out, resume=args.resume, val_dataset=val_set,
                 eval_fn=_eval_fn(int(cfg.get("eval", {}).get("batch_size", 4)), cfg.get("eval", {}).get("max_events")))
    out = Path(args.out)
    save_weights(model, out / "weights")
    summary = {"run": cfg["run"], "fit": {k: v for k, v in result.items() if k != "eval"}}
    if val_set is not None:
        metrics = evaluate_model(model, val_set, int(cfg.get("eval", {}).get("batch_size", 4)))
        atomic_write_json(out / "val_metrics.json", metrics)
        summary["val"] = {k: metrics[k] for k in ("mIoU", "macro_F1", "allAcc")}
    atomic_write_json(out / "summary.json", summary)
    return summary


def make_dataset_for(paths, data_cfg, train: bool, seed: int = 0, max_events=None):
    from .common import make_dataset

    return make_dataset(paths, data_cfg, train=train, seed=seed, max_events=max_events)


def save_weights(model: SemanticModel, out_dir) -> None:
    """``model.safetensors`` + ``config.json`` (design.md §4), via `larpanda.io.save_model` when present."""
    try:
        from ..io import save_model
    except ImportError:
        save_model = None
    if save_model is not None:
        save_model(model, out_dir)
        return
    from safetensors.torch import save_file

    from ..atomic import atomic_path, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    atomic_write_json(out / "config.json", model.config)


def load_weights(path):
    """Any larpanda weights via `larpanda.io.load_model`; semantic weights also load without it."""
    from .common import find_weights, read_weights_config

    p = find_weights(path)
    try:
        from ..io import load_model
    except ImportError:
        load_model = None
    if load_model is not None:
        return load_model(str(p))
    cfg = read_weights_config(p)
    if cfg.get("task") != "semantic" or not p.is_dir():
        raise UserError(f"{path}: cannot load (larpanda.io is not available)")
    from safetensors.torch import load_file

    model = model_from_config(cfg)
    model.load_state_dict(load_file(str(p / "model.safetensors")), strict=True)
    return model


def load_semantic(path) -> SemanticModel:
    model = load_weights(path)
    if getattr(model, "config", {}).get("task") != "semantic":
        raise UserError(f"{path}: not semantic-segmentation weights (task {getattr(model, 'config', {}).get('task')!r})")
    return model


def run_evaluate(args) -> dict:
    """``larpanda evaluate --task semantic``: metrics JSON (stdout and ``--out``), optional report."""
    from ..atomic import atomic_write_json
    from .common import make_dataset

    model = load_semantic(args.weights).to(args.device)
    ds = make_dataset(args.data, {"energy_threshold": model.energy_threshold, "min_points": getattr(args, "min_points", 1024),
                                  "skip_bad_events": getattr(args, "skip_bad_events", False)}, train=False)
    if len(ds) == 0:
        raise UserError(f"{' '.join(map(str, args.data))}: no event qualifies (min {args.min_points} raw points; see --min-points)")
    metrics = evaluate_model(model, ds, args.batch_size, args.max_events, exclude=(4,) if args.exclude_led else (),
                             device=args.device)
    metrics["weights"] = str(args.weights)
    print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}, indent=1))
    if args.out:
        atomic_write_json(args.out, metrics)
    if getattr(args, "report", None):
        try:
            from ..viz.report import build_report
        except ImportError:
            raise UserError("--report: the report builder (larpanda.viz.report) is not available") from None
        build_report(args.report, {"semantic": metrics})
    return metrics


def run_predict(args) -> None:
    """``larpanda predict``: one vlen dataset per output, row i = input event i (design.md §4)."""
    import h5py

    from ..atomic import atomic_path
    from ..data import pilarnet

    model = load_weights(args.weights)
    task = getattr(model, "config", {}).get("task")
    if task not in ("semantic", "panoptic"):
        raise UserError(f"{args.weights}: predict needs semantic or panoptic weights (task {task!r})")
    model = model.to(args.device)
    n = pilarnet.num_events(args.data)
    if args.max_events is not None:
        n = min(n, int(args.max_events))
    from ..io.memory import InferenceMemoryError, log

    outputs: dict[str, list] = {}
    widths: dict[str, int] = {}
    skipped: list[int] = []
    t0 = time.perf_counter()
    chunk = 16
    for start in range(0, n, chunk):
        for k, ev in enumerate(pilarnet.read_events(args.data, start, min(n, start + chunk))):
            try:
                pred = model.predict(ev)
            except InferenceMemoryError as exc:  # above --max-memory-gb / --max-points
                if not getattr(args, "skip_bad_events", False):
                    raise
                log.warning("skipping event: %s", exc)
                skipped.append(start + k)
                pred = model.empty_prediction(len(ev))  # its rows read as removed by the cut
            for k, v in pred.items():
                v = np.asarray(v)
                widths[k] = 1 if v.ndim == 1 else int(np.prod(v.shape[1:]))
                outputs.setdefault(k, []).append(v.reshape(-1))
    elapsed = time.perf_counter() - t0
    with atomic_path(args.out) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["source_file"] = os.path.abspath(args.data)
            f.attrs["task"] = task
            f.attrs["weights"] = str(args.weights)
            f.create_dataset("event_index", data=np.arange(n, dtype=np.int64))
            f.attrs["skipped_events"] = len(skipped)
            f.create_dataset("skipped_event_index", data=np.asarray(skipped, dtype=np.int64))
            for k, rows in outputs.items():
                dtype = np.float32 if rows and rows[0].dtype.kind == "f" else np.int64
                ds = f.create_dataset(k, (len(rows),), dtype=h5py.vlen_dtype(dtype))
                for i, r in enumerate(rows):
                    ds[i] = r.astype(dtype)
                ds.attrs["columns"] = widths[k]
    if not getattr(args, "quiet", False):
        import sys

        note = f" ({len(skipped)} skipped: above the inference limits)" if skipped else ""
        print(f"predicted {n} events{note} in {elapsed:.2f} s ({1000 * elapsed / max(1, n):.1f} ms/event) -> {args.out}",
              file=sys.stderr)
