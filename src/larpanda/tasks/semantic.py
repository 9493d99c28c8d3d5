"""Semantic segmentation (5 motif classes) on the Panda backbone, plus the UResNet baseline (docs/model.md §3).

Modes (docs/model.md §3.1, lr rules docs/model.md §3.2):

* ``linear``  frozen encoder (enc_mode=True), full up-cast features (Σ enc_channels = 1232 for panda-base),
  ``seg_head`` = Linear(1232, 5).
* ``decoder`` frozen embedding + encoder, trainable PTv3 decoder (dec depths (2,2,2,2), channels
  (64,96,192,384), heads (4,6,12,24), patch 256) and ``seg_head`` = Linear(64, 5).
* ``full``    as decoder, everything trainable; encoder block lr = lr·0.9^((N_enc − idx − 1) + N_dec)·0.05,
  decoder block ``dec{e}.block{b}`` lr = lr·0.9^(N_dec − 1 − Σdec_depths[:e] − b), the rest at lr.
* ``scratch`` as full, random initialisation (inherits the 0.05 encoder multiplier, docs/model.md §3.2).
* ``uresnet`` the sparse UResNet baseline (`larpanda.nn.uresnet`, docs/model.md §3.5), ``seg_head`` = Linear(filters, 5).

Loss: cross-entropy (optional class weights, ignore −1) + 0.05 · Lovász-softmax (classes present,
pooled over the batch, ignore −1). State-dict keys are ``backbone.*`` and ``seg_head.*``, as in the official
``panda_semantic.pth`` (docs/model.md §3.1, docs/design.md §4.6), so that file loads with strict keys.

Deviation (documented): frozen parts run in eval mode (no DropPath, deterministic), where pimm keeps
them in train mode (docs/model.md §3.1).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import torch.nn as nn

from ..constants import ENERGY_THRESHOLD_MEV, LED_CLASS, NUM_SEMANTIC_CLASSES, SEMANTIC_CLASSES
from ..errors import UserError

MODES = ("linear", "decoder", "full", "scratch", "uresnet")
PANDA_DECODER = dict(dec_depths=(2, 2, 2, 2), dec_channels=(64, 96, 192, 384), dec_num_head=(4, 6, 12, 24),
                     dec_patch_size=(256, 256, 256, 256))


from .losses import lovasz_softmax, semantic_loss  # noqa: F401  (re-exported)


# ------------------------------------------------------------------------------------------ model


def decoder_kwargs(backbone_kwargs: dict) -> dict:
    """PTv3 decoder kwargs for the semantic dec/fft/scratch modes: the backbone config's own ``dec_*`` when it
    has one stage per encoder down-sampling (the model presets carry the Panda values (2,2,2,2),
    (64,96,192,384), (4,6,12,24), 256; docs/model.md §1.1); the Panda values whenever the encoder is Panda's
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
    """Official PTv3 kwargs of the semantic backbone for ``mode`` (docs/model.md §3.1)."""
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
        uresnet: kwargs of `larpanda.nn.uresnet.UResNet` plus ``in_coords`` (bool) and ``voxel_grid`` (bool, default
            true: convolve on ``voxel_coord``, the raw voxel lattice; false: on ``grid_coord``) for mode uresnet.
        class_weights: optional (5,) CE weights; lovasz_weight: 0.05 (docs/model.md §3.3).
        energy_threshold: the cut used by `predict`/`embed` (0.13 MeV, docs/design.md §6.1).
        mlp_head: the official Segmenter's ``mlp_head=True`` head, Linear(C, C/2), ReLU, Dropout(0.3),
            Linear(C/2, K) (keys ``seg_head.0``, ``seg_head.3``), instead of Linear(C, K).
        logit_bias: optional (5,) per-class offsets added to the logits in eval mode, fitted on the
            validation split after training (`fit_logit_bias`); None for official weights.
        exact_backbone: use the ``backbone`` kwargs as given (official defaults for omitted keys; an official
            checkpoint's own mask token, layer scale and decoder), instead of the mode's training layout
            (`backbone_kwargs_for_mode`); its ``enc_mode`` must agree with ``mode`` (linear ↔ True).
    """

    def __init__(self, mode: str, backbone: dict | None = None, uresnet: dict | None = None,
                 num_classes: int = NUM_SEMANTIC_CLASSES, class_weights=None, lovasz_weight: float = 0.05,
                 energy_threshold: float = ENERGY_THRESHOLD_MEV, mlp_head: bool = False, exact_backbone: bool = False,
                 logit_bias=None):
        super().__init__()
        self.logit_bias = None if logit_bias is None else [float(x) for x in logit_bias]
        if self.logit_bias is not None and len(self.logit_bias) != num_classes:
            raise UserError(f"semantic model: logit_bias has {len(self.logit_bias)} values for {num_classes} classes")
        if mode not in MODES:
            raise UserError(f"semantic mode {mode!r}: choose from {', '.join(MODES)}")
        self.mode, self.num_classes = mode, num_classes
        self.mlp_head, self.exact_backbone = bool(mlp_head), bool(exact_backbone) and mode != "uresnet"
        self.class_weights = None if class_weights is None else [float(x) for x in class_weights]
        self.lovasz_weight, self.energy_threshold = float(lovasz_weight), float(energy_threshold)
        self.tta = 1  # eval mode: mean logits over this many cube symmetries (larpanda.tasks.tta); not saved
        if mode == "uresnet":
            from ..nn.uresnet import UResNet

            ucfg = dict(uresnet or {})
            self.in_coords = bool(ucfg.pop("in_coords", False))
            self.voxel_grid = bool(ucfg.pop("voxel_grid", True))
            ucfg.pop("preset", None)
            self.backbone = UResNet(in_channels=4 if self.in_coords else 1, num_classes=0, **ucfg)
            self.backbone_kwargs = None
            self.uresnet_kwargs = {**ucfg, "in_coords": self.in_coords, "voxel_grid": self.voxel_grid}
            width = self.backbone.filters
        else:
            from ..nn.ptv3 import PointTransformerV3

            if backbone is None:
                raise UserError(f"semantic mode {mode}: backbone kwargs are required")
            if self.exact_backbone:
                self.backbone_kwargs = {k: v for k, v in dict(backbone).items() if k != "type"}
                enc_mode = bool(self.backbone_kwargs.get("enc_mode", False))
                if enc_mode != (mode == "linear"):
                    raise UserError(f"semantic mode {mode}: the backbone has enc_mode={enc_mode} "
                                    f"({'linear' if enc_mode else 'decoder/full'} layout)")
            else:
                self.backbone_kwargs = backbone_kwargs_for_mode(backbone, mode)
            self.uresnet_kwargs = None
            try:
                self.backbone = PointTransformerV3(**self.backbone_kwargs)
            except (ValueError, TypeError, AssertionError) as exc:
                raise UserError(f"invalid semantic backbone config: {exc}") from None
            width = self.backbone.out_channels
        if self.mlp_head:  # the official Segmenter(mlp_head=True) head
            self.seg_head = nn.Sequential(nn.Linear(width, width // 2), nn.ReLU(inplace=True), nn.Dropout(p=0.3),
                                          nn.Linear(width // 2, num_classes))
        else:
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
            "class_names": list(SEMANTIC_CLASSES),
        } | ({"mlp_head": True} if self.mlp_head else {}) | ({"exact_backbone": True} if self.exact_backbone else {}) | (
            {"logit_bias": self.logit_bias} if self.logit_bias is not None else {})

    # --- forward ------------------------------------------------------------------------------------
    def features(self, point) -> torch.Tensor:
        """(N, C) per-point features before ``seg_head``, in the input rows' order."""
        if self.mode == "uresnet":
            from ..nn.uresnet import batch_coords

            point.ensure_batch()
            feat = point["feat"] if self.in_coords else point["energy"]
            # voxel_grid: convolve on the raw voxel lattice; grid_coord (0.665-voxel cells) leaves gaps
            # between neighbouring voxels (larpanda.data.transforms); models saved before keep grid_coord
            key = "voxel_coord" if self.voxel_grid else "grid_coord"
            if key not in point:
                raise UserError(f"semantic uresnet: the batch has no {key!r} (build it with larpanda.data.transforms.prepare)")
            return self.backbone(feat.float(), batch_coords(point[key], point["batch"]))
        inp = type(point)({k: point[k] for k in ("coord", "grid_coord", "feat", "offset") if k in point})
        if self.mode == "linear":
            with torch.no_grad():
                out = self.backbone(inp, upcast=True)
            return out["feat"].detach()
        out = self.backbone(inp)
        return out["feat"]

    def forward(self, point) -> torch.Tensor:
        """Logits (N, num_classes) (the official Segmenter's ``seg_logits``; in eval mode plus ``logit_bias``
        when the model has one); in eval mode with ``tta`` > 1, the mean logits over that many cube symmetries."""
        if self.tta > 1 and not self.training:
            from .tta import tta_logits

            logits = tta_logits(lambda p: self.seg_head(self.features(p)), point, self.tta)
        else:
            logits = self.seg_head(self.features(point))
        if self.logit_bias is not None and not self.training:
            logits = logits + logits.new_tensor(self.logit_bias)
        return logits

    def training_step(self, batch, step: int):
        logits = self(batch)
        labels = batch["segment_motif"].long()
        loss, ce, lov = semantic_loss(logits, labels, self.class_weights, self.lovasz_weight)
        with torch.no_grad():
            valid = labels >= 0
            acc = (logits.argmax(1)[valid] == labels[valid]).float().mean() if valid.any() else torch.tensor(0.0)
        return loss, {"ce": float(ce.detach()), "lovasz": float(lov.detach()), "acc": float(acc)}

    def param_groups(self, cfg: dict) -> list[dict]:
        """Trainer groups (`larpanda.train.optim.grouped`) with the layer-wise lr rules of the semantic
        modes (docs/model.md): decoder block ``idx`` of N_dec: ``layer_decay^(N_dec − 1 − idx)``; encoder
        block ``idx`` of N_enc: ``layer_decay^(N_enc − idx − 1 + N_dec) · backbone_lr_mult``; the rest 1.
        ``cfg`` is the trainer's ``train`` section."""
        from ..train.optim import block_index, grouped

        decay, mult = float(cfg.get("layer_decay", 1.0)), float(cfg.get("backbone_lr_mult", 1.0))
        if self.mode not in ("decoder", "full", "scratch"):
            return grouped(self, lambda name: 1.0)
        dd, ed = list(self.backbone.kwargs["dec_depths"]), list(self.backbone.kwargs["enc_depths"])  # resolved kwargs
        n_dec, n_enc = sum(dd), sum(ed)

        def scale(name: str) -> float:
            if not name.startswith("backbone."):
                return 1.0
            dec, enc = block_index(name, dd, "dec"), block_index(name, ed, "enc")
            if dec is not None:
                return decay ** (n_dec - 1 - dec)
            return 1.0 if enc is None else decay ** ((n_enc - enc - 1) + n_dec) * mult

        return grouped(self, scale)

    # --- inference on one event ---------------------------------------------------------------------
    def empty_prediction(self, n: int, logits: bool = False) -> dict:
        """`predict`'s output for an event of ``n`` rows none of which is predicted (all removed)."""
        out = {"semantic": np.full(n, -1, np.int64), "semantic_probs": np.zeros((n, self.num_classes), np.float32)}
        if logits:
            out["semantic_logits"] = np.zeros((n, self.num_classes), np.float32)
        return out

    @torch.no_grad()
    def predict(self, event, logits: bool = False) -> dict:
        """Per raw row: ``semantic`` (N,) int64 (−1 for rows removed by the energy cut) and
        ``semantic_probs`` (N, 5) float32 (0 for removed rows); with ``logits`` also ``semantic_logits``
        (N, 5) float32, the model's logits (0 for removed rows)."""
        from ..io.events import run_on_event

        out = self.empty_prediction(len(event), logits)
        if len(event) == 0 or not (event.energy > self.energy_threshold).any():  # nothing survives the cut
            return out
        d, z = run_on_event(self, event, self.energy_threshold, self)
        z = z.float().cpu()
        probs = torch.softmax(z, 1).numpy()
        out["semantic"][d["index"]] = probs.argmax(1)
        out["semantic_probs"][d["index"]] = probs
        if logits:
            out["semantic_logits"][d["index"]] = z.numpy()
        return out

    def embed(self, event) -> np.ndarray:
        """(N_after_cut, C) features before ``seg_head``, rows in raw-event order of the kept points."""
        from ..io.events import embed_event

        return embed_event(self, event, self.energy_threshold, self.features)


def model_from_config(cfg: dict) -> SemanticModel:
    """Build a `SemanticModel` from a weights ``config.json`` dict (task "semantic") for `io.load_model`.

    Also accepts the official ``panda_semantic.pth`` config (``official: true``; Segmenter kwargs
    ``num_classes``, ``backbone_out_channels``, ``backbone`` with a ``type`` key, ``freeze_backbone``,
    ``mlp_head``; docs/design.md §4.6): the backbone exactly as configured (official PTv3 defaults for
    omitted keys: its mask token, layer scale and decoder are kept), enc_mode → ``linear``, otherwise ``full``
    (decoder and full share one layout), ``mlp_head`` → the MLP head."""
    if cfg.get("official"):
        from ..nn import ptv3

        allowed = set(ptv3.OFFICIAL_DEFAULTS) | set(getattr(ptv3, "_UNSUPPORTED", {}))
        bb = {k: v for k, v in dict(cfg["backbone"]).items() if k in allowed}
        mode = "linear" if bb.get("enc_mode", ptv3.OFFICIAL_DEFAULTS["enc_mode"]) else "full"
        model = SemanticModel(mode, backbone=bb, num_classes=int(cfg.get("num_classes", NUM_SEMANTIC_CLASSES)),
                              mlp_head=bool(cfg.get("mlp_head", False)), exact_backbone=True)
        width = model.backbone.out_channels
        if cfg.get("backbone_out_channels") not in (None, width):
            raise UserError(f"official semantic checkpoint: backbone_out_channels={cfg['backbone_out_channels']} but "
                            f"its backbone gives {width} features per point")
        return model
    return SemanticModel(
        cfg.get("mode", "full"), backbone=cfg.get("backbone"),
        # UResNets saved without the key convolved on grid_coord
        uresnet=None if cfg.get("uresnet") is None else {"voxel_grid": False, **cfg["uresnet"]},
        num_classes=cfg.get("num_classes", NUM_SEMANTIC_CLASSES), class_weights=cfg.get("class_weights"),
        lovasz_weight=cfg.get("lovasz_weight", 0.05), energy_threshold=cfg.get("energy_threshold", ENERGY_THRESHOLD_MEV),
        mlp_head=bool(cfg.get("mlp_head", False)), exact_backbone=bool(cfg.get("exact_backbone", False)),
        logit_bias=cfg.get("logit_bias"))


# ------------------------------------------------------------------------------------------- runs


def build_semantic_model(mode: str, cfg: dict, weights=None) -> SemanticModel:
    """Model for a training run: pretrained encoder for linear/decoder/full, preset for scratch/uresnet."""
    head = cfg.get("head", {})
    common = dict(num_classes=head.get("num_classes", NUM_SEMANTIC_CLASSES), class_weights=head.get("class_weights"),
                  lovasz_weight=head.get("lovasz_weight", 0.05),
                  energy_threshold=cfg.get("data", {}).get("energy_threshold", ENERGY_THRESHOLD_MEV))
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
        from .weights import load_backbone_into, pretrained_backbone

        bb, sd = pretrained_backbone(weights)
        model = SemanticModel(mode, backbone=bb, **common)
        load_backbone_into(model.backbone, sd, weights)
    return model


def evaluate_model(model, dataset, batch_size: int = 4, max_events=None, exclude=(), device=None,
                   keep: list | None = None) -> dict:
    """Pooled docs/design.md §7.1 metrics of ``model`` on ``dataset`` (after the energy cut), on ``device``
    (default: the model's). ``keep``: a list that receives each batch's (logits (n, K) float32, labels (n,))
    as numpy arrays."""
    from ..metrics.semantic import SemanticAccumulator

    device = device or next(model.parameters()).device

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
            if keep is not None:
                keep.append((logits.float().cpu().numpy(), np.asarray(batch["segment_motif"]).reshape(-1)))
            n_events += batch.num_events
    model.train(was)
    out = acc.compute()
    out["num_events"] = n_events
    out["skipped_events"] = len(skipped) - k0  # bad events and events above the inference limits
    out["seconds_per_event"] = (time.perf_counter() - t0) / max(1, n_events)
    return out


def fit_logit_bias(logits: np.ndarray, labels: np.ndarray, grid=np.arange(-3.0, 3.001, 0.25), sweeps: int = 3) -> list[float]:
    """Per-class logit offsets that maximise the pooled mIoU of ``argmax(logits + bias)`` on ``labels``.

    ``logits`` (N, K) float, ``labels`` (N,) int (−1 ignored). Coordinate ascent from 0 over ``grid``, one
    class at a time, ``sweeps`` times; a class's offset moves only on a strict gain. Why: the CE class
    weights that make Michel and delta learnable at all (configs/semantic/cpu-long.yaml) also tilt every
    decision towards them; the offsets move the decision boundaries back to where the validation IoU is
    best (docs/benchmarks.md, "Semantic segmentation")."""
    from ..metrics.semantic import confusion_matrix, metrics_from_confusion

    keep = labels >= 0
    z, y = np.asarray(logits, np.float32)[keep], np.asarray(labels)[keep]
    k = z.shape[1]

    def miou(b):
        return metrics_from_confusion(confusion_matrix((z + b).argmax(1), y, k), class_names=list(range(k)))["mIoU"]

    bias = np.zeros(k, np.float32)
    best = miou(bias)
    for _ in range(sweeps):
        for c in range(k):
            for g in grid:
                trial = bias.copy()
                trial[c] = g
                score = miou(trial)
                if score > best + 1e-12:
                    best, bias = score, trial
    return [round(float(b), 4) for b in bias]


def calibrate(model: SemanticModel, dataset, batch_size: int = 4, max_events=None) -> tuple[list | None, dict]:
    """Fit ``model.logit_bias`` on ``dataset`` (the validation split) with `fit_logit_bias`, in one pass over
    it; returns the offsets and the `evaluate_model` metrics of the calibrated model on the same events."""
    from ..metrics.semantic import SemanticAccumulator

    model.logit_bias = None
    kept = []
    metrics = evaluate_model(model, dataset, batch_size, max_events, keep=kept)
    if not kept:
        return None, metrics
    z, y = np.concatenate([k[0] for k in kept]), np.concatenate([k[1] for k in kept])
    model.logit_bias = fit_logit_bias(z, y)
    acc = SemanticAccumulator(num_classes=model.num_classes)
    acc.update((z + np.asarray(model.logit_bias, np.float32)).argmax(1), y)
    return model.logit_bias, metrics | acc.compute() | {"num_events": metrics["num_events"]}


def run_train(args) -> dict:
    """``larpanda train semantic``: label subset → fit → ``OUT/weights`` + ``OUT/val_metrics.json``."""
    from .runs import run_datasets, task_config, train_and_save

    cfg, seed = task_config(args, "semantic", args.mode)
    full, train_set, val_set = run_datasets(args, cfg, seed)
    if args.mode in ("scratch", "uresnet") and args.weights:
        raise UserError(f"--mode {args.mode} trains from random initialisation; drop --weights")
    model = build_semantic_model(args.mode, cfg, args.weights)
    cfg["run"] = {"mode": args.mode, "label_fraction": float(args.label_fraction), "labelled_events": len(train_set),
                  "available_events": len(full), "weights": args.weights, "seed": seed}
    before_save = None
    if bool(cfg["train"].get("calibrate", True)):
        def before_save(task, val):  # the decision offsets, fitted on the validation split
            bias, metrics = calibrate(task, val, int(cfg.get("eval", {}).get("batch_size", 4)))
            return {"logit_bias": bias}, metrics
    return train_and_save(model, cfg, args, train_set, val_set, evaluate_model, ("mIoU", "macro_F1", "allAcc"),
                          before_save=before_save)


def run_evaluate(args, model) -> dict:
    """``larpanda evaluate`` of semantic weights (``model``, already loaded): metrics JSON (stdout and
    ``--out``), optional report."""
    from ..atomic import atomic_write_json
    from .common import evaluation_dataset

    model = model.to(args.device)
    ds = evaluation_dataset(args, model)
    metrics = evaluate_model(model, ds, args.batch_size, args.max_events, exclude=(LED_CLASS,) if args.exclude_led else (),
                             device=args.device)
    metrics["weights"] = str(args.weights)
    print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}, indent=1))
    if args.out:
        atomic_write_json(args.out, metrics)
    if args.report:
        from ..viz.report import build_report
        from ..viz.sections import semantic_metrics_section

        build_report({}, args.report, extras={"sections": [semantic_metrics_section(metrics)]})
    return metrics
