"""Panoptic segmentation: particles with PID, or interactions (docs/model.md §4).

`PanopticModel` = PTv3 backbone (``backbone.*``, enc_mode, up-cast to sum(enc_channels) features) +
`MaskQueryDecoder` (``decoder.*``), the key layout of the official ``panda_particle.pth`` /
``panda_interaction.pth``. Training loss: `matching.detector_loss`; inference: `postprocess.postprocess`.

Levels (docs/model.md §4.2):

========== ============================ ====================== ======= ======= ===============
level      instance / segment label     classes (K incl. stuff) stuff   queries proj / cls head
========== ============================ ====================== ======= ======= ===============
particle   instance_particle/segment_pid 6 (γ e μ π p, LED=5)   [5]     32      MLP / MLP
interaction instance_interaction / 1[id≠−1] 2 (0 LED, 1 thing) [0]     12      Linear / Linear
========== ============================ ====================== ======= ======= ===============

Modes: ``decoder`` (backbone frozen, run in eval mode without gradients), ``full`` (all trainable; encoder
lr = lr·layer_decay^(depth−idx−1+3)·backbone_lr_mult, decoder blocks lr·0.97^(2−b), docs/model.md §4.5),
``scratch`` (full without pretrained weights).
"""

from __future__ import annotations

import json
import re
import sys
import time

import numpy as np
import torch
from torch import nn

from ..constants import ENERGY_THRESHOLD_MEV, LED_CLASS, PID_CLASSES
from ..errors import UserError
from .matching import DEFAULTS as LOSS_DEFAULTS
from .matching import detector_loss
from .panoptic_head import MaskQueryDecoder
from .panoptic_official import from_panda_config
from .postprocess import postprocess
from .postprocess import settings as post_settings

LEVELS = {
    "particle": dict(num_classes=6, stuff_classes=[5], num_queries=32, mlp_point_proj=True,
                     instance_key="instance_particle", class_names=list(PID_CLASSES[:5])),
    "interaction": dict(num_classes=2, stuff_classes=[0], num_queries=12, mlp_point_proj=False,
                        instance_key="instance_interaction", class_names=["thing"]),
}
MODES = ("decoder", "full", "scratch")
HEADS = ("mask", "graph")
DECODER_KEYS = ("hidden_channels", "num_heads", "num_queries", "depth", "mlp_ratio", "qkv_bias", "mlp_point_proj",
                "pos_on_keys", "pos_emb", "qk_scale", "layer_scale")


def level_labels(batch, level: str):
    """(instance (N,), segment (N,)) training labels of ``level`` from a prepared/collated batch."""
    if level == "particle":
        return batch["instance_particle"].long(), batch["segment_pid"].long()
    inst = batch["instance_interaction"].long()
    return inst, (inst >= 0).long()  # segment_interaction: 1 thing, 0 LED (docs/model.md §4.2)


def _as_tensor(x):
    return torch.as_tensor(x) if not torch.is_tensor(x) else x


class PanopticModel(nn.Module):
    """Backbone + mask-query decoder.

    Args:
        backbone: PTv3 kwargs (official names); enc_mode is forced True and the mask token dropped
            (docs/model.md §4.1) unless ``exact_backbone``.
        level: "particle" or "interaction". mode: one of MODES.
        decoder: overrides of the decoder kwargs (hidden_channels 256, num_heads 16, depth 3, ...).
        loss: overrides of `matching.DEFAULTS`. postprocess: overrides of `postprocess.DEFAULTS` (checked by
            `postprocess.settings`).
        energy_threshold: MeV cut of `transforms.prepare` at inference (0.13).
        stuff_classes: the stuff (LED) classes, default the level's ([5] particle, [0] interaction); an official
            Detector config may name others or none (then the background class is −1).
        head: "mask" (the official mask-query decoder, default) or "graph" (`graph_head.GraphHead`, staged
            graph clustering; ``graph`` overrides `graph_head.DEFAULTS`).
        exact_backbone: use the ``backbone`` kwargs as given (an official checkpoint's own mask token;
            ``enc_mode`` must be True) instead of the training layout (enc_mode forced True, no mask token).
    """

    def __init__(self, backbone: dict, level: str = "particle", mode: str = "decoder", decoder: dict | None = None,
                 loss: dict | None = None, postprocess: dict | None = None, energy_threshold: float = ENERGY_THRESHOLD_MEV,
                 stuff_classes=None, exact_backbone: bool = False, head: str = "mask", graph: dict | None = None):
        super().__init__()
        from ..nn.ptv3 import PointTransformerV3

        if level not in LEVELS:
            raise UserError(f"--level {level}: choose particle or interaction")
        if mode not in MODES:
            raise UserError(f"--mode {mode}: choose from {', '.join(MODES)}")
        self.level, self.mode = level, mode
        lv = LEVELS[level]
        bb = {k: v for k, v in dict(backbone).items() if k != "type"}
        self.exact_backbone = bool(exact_backbone)
        if self.exact_backbone:
            if not bb.get("enc_mode", False):
                raise UserError("panoptic backbone: enc_mode must be True (the decoder reads the up-cast encoder "
                                "features; a backbone with its own PTv3 decoder is not supported)")
        else:
            bb["enc_mode"] = True
            bb["mask_token"] = False  # docs/model.md §4.1 (the SSL mask token is dropped on load)
            for k in ("dec_depths", "dec_channels", "dec_num_head", "dec_patch_size", "freeze_encoder"):
                bb.pop(k, None)
        self.backbone_kwargs = bb
        try:
            self.backbone = PointTransformerV3(**bb)
        except (ValueError, TypeError, AssertionError) as exc:
            raise UserError(f"invalid panoptic backbone config: {exc}") from None
        dk = dict(hidden_channels=256, num_heads=16, num_queries=lv["num_queries"], depth=3, mlp_ratio=4.0,
                  qkv_bias=True, mlp_point_proj=lv["mlp_point_proj"], pos_on_keys=True, pos_emb=True)
        dk.update({k: v for k, v in (decoder or {}).items() if k in DECODER_KEYS})
        self.decoder_kwargs = dk
        self.full_in_channels = int(sum(self.backbone.config["enc_channels"]))
        self.stuff_classes = tuple(int(c) for c in (lv["stuff_classes"] if stuff_classes is None else stuff_classes))
        if head not in HEADS:
            raise UserError(f"--head {head}: choose from {', '.join(HEADS)}")
        self.head = head
        if head == "graph":
            from .graph_head import DEFAULTS as GRAPH_DEFAULTS
            from .graph_head import GraphHead

            unknown = sorted(set(graph or {}) - set(GRAPH_DEFAULTS))
            if unknown:
                raise UserError(f"graph head: unknown setting(s) {', '.join(unknown)} (known: {', '.join(GRAPH_DEFAULTS)})")
            self.graph_kwargs = {**GRAPH_DEFAULTS, **(graph or {})}
            self.decoder = GraphHead(self.full_in_channels, level, **self.graph_kwargs)
        else:
            self.decoder = MaskQueryDecoder(full_in_channels=self.full_in_channels, num_classes=lv["num_classes"],
                                            stuff_classes=self.stuff_classes, **dk)
        self.num_classes = lv["num_classes"]
        self.loss_cfg = {**LOSS_DEFAULTS, **(loss or {})}
        self.post_cfg = post_settings(postprocess, where="panoptic postprocess config")
        self.energy_threshold = energy_threshold
        self.feature_cache: dict | None = None  # decoder mode: enable_feature_cache()
        self._apply_freeze()

    def enable_feature_cache(self, dtype=torch.float16):
        """Decoder mode without augmentation: keep each training event's frozen backbone features (keyed by
        the dataset's ``file_index``/``event_index``) so every later epoch skips the backbone. Memory:
        N_points × sum(enc_channels) × 2 bytes per event."""
        if self.mode != "decoder":
            raise UserError("the feature cache needs --mode decoder (a frozen backbone)")
        self.feature_cache, self._cache_dtype = {}, dtype

    # --- modes ------------------------------------------------------------------------------------
    def _apply_freeze(self):
        for p in self.backbone.parameters():
            p.requires_grad_(self.mode != "decoder")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.mode == "decoder":
            self.backbone.eval()  # frozen features (deterministic; pimm keeps DropPath on, docs/model.md §4.5)
        return self

    @property
    def config(self) -> dict:
        return {"task": "panoptic", "level": self.level, "mode": self.mode, "backbone": self.backbone_kwargs,
                "decoder": self.decoder_kwargs, "loss": self.loss_cfg, "postprocess": self.post_cfg,
                "energy_threshold": self.energy_threshold, "num_classes": self.num_classes,
                "stuff_classes": list(self.stuff_classes), "class_names": LEVELS[self.level]["class_names"]} | (
                    {"exact_backbone": True} if self.exact_backbone else {}) | (
                    {"head": "graph", "graph": self.graph_kwargs | self.decoder.post
                     | {"led_fragments": self.decoder.led_fragments}}
                    if self.head == "graph" else {})

    @property
    def background_class(self) -> int:
        """Class of the stuff points in the predictions: the first stuff class, or −1 without one (Panda)."""
        return self.stuff_classes[0] if self.stuff_classes else -1

    # --- forward ----------------------------------------------------------------------------------
    def features(self, point) -> torch.Tensor:
        """(N, sum(enc_channels)) up-cast backbone features at the input rows."""
        from ..data.point import Point

        inp = Point({k: point[k] for k in ("coord", "grid_coord", "feat", "offset") if k in point})
        if self.mode == "decoder":
            with torch.no_grad():
                return self.backbone(inp, upcast=True)["feat"].detach()
        return self.backbone(inp, upcast=True)["feat"]

    def _cached_features(self, point) -> torch.Tensor:
        from ..data.point import collate

        off = [0] + _as_tensor(point["offset"]).tolist()
        keys = list(zip(_as_tensor(point["file_index"]).tolist(), _as_tensor(point["event_index"]).tolist()))
        missing = [b for b, k in enumerate(keys) if k not in self.feature_cache]
        if missing:
            sub = collate([{k: point[k][off[b]:off[b + 1]] for k in ("coord", "grid_coord", "feat")} for b in missing])
            f = self.features(sub.to(point["coord"].device))
            so = [0] + sub["offset"].tolist()
            for j, b in enumerate(missing):
                self.feature_cache[keys[b]] = f[so[j]:so[j + 1]].to("cpu", self._cache_dtype)
        dev = point["coord"].device
        return torch.cat([self.feature_cache[k].to(dev).float() for k in keys])  # (fp16 cat fails under CPU autocast)

    def forward(self, point) -> dict:
        """Decoder outputs (see `MaskQueryDecoder.forward`) for a collated batch; in eval mode they include
        ``seg_logits`` (N, K), the official Detector's per-point class logits in the batch's row order."""
        if self.feature_cache is not None and self.training and "event_index" in point and "file_index" in point:
            feat = self._cached_features(point)
        else:
            feat = self.features(point)
        if self.head == "graph":
            return self.decoder(feat.float(), point, point if self.training else None)
        return self.decoder(feat.float(), point["coord"].float(), _as_tensor(point["offset"]).long())

    def training_step(self, batch, step: int):
        """Detector loss of a collated batch. Under autocast (``train.amp``) only the forward pass runs
        in reduced precision; the matcher costs and the losses are computed in fp32 (docs/model.md §4.3, docs/model.md §4.4)."""
        out = self(batch)
        if self.head == "graph":
            with torch.autocast(out["motif_logits"].device.type, enabled=False):
                return self.decoder.loss(out)
        inst, seg = level_labels(batch, self.level)
        with torch.autocast(out["stuff_logits"].device.type, enabled=False):
            return detector_loss(out, inst, seg, self.stuff_classes, self.num_classes, self.loss_cfg)

    def param_groups(self, cfg: dict) -> list[dict]:
        """Trainer groups (`larpanda.train.optim.grouped`; docs/model.md): mask-decoder block b of D
        ``layer_decay^(D−1−b)``; encoder block idx (full/scratch) ``layer_decay^(Σdepths−idx−1+3) ·
        backbone_lr_mult``; the rest (the whole graph head) 1; no weight decay on norms, biases and the query embeddings.
        ``cfg`` is the trainer's ``train`` section."""
        from ..train.optim import block_index, grouped, no_weight_decay

        ld, mult = float(cfg.get("layer_decay", 0.97)), float(cfg.get("backbone_lr_mult", 1.0))
        depth, enc = len(getattr(self.decoder, "blocks", ())), list(self.backbone.config["enc_depths"])

        def scale(name: str) -> float:
            m = re.match(r"decoder\.blocks\.(\d+)\.", name)
            if m:
                return ld ** (depth - 1 - int(m.group(1)))
            idx = block_index(name, enc) if name.startswith("backbone.enc.") else None
            return 1.0 if idx is None else ld ** (sum(enc) - idx - 1 + 3) * mult

        return grouped(self, scale, lambda name, p: no_weight_decay(name, p) or "query_feat" in name or "query_embed" in name)

    # --- inference --------------------------------------------------------------------------------
    def set_postprocess(self, **values) -> dict:
        """Update the post-processing settings (``post_cfg``, checked by `postprocess.settings`) used by
        `predict`, `infer` and evaluation; returns them. The graph head has its own (`GraphHead.set_post`:
        ``edge_threshold``, ``fragment_threshold``, ``interaction_threshold``, ``min_points``)."""
        if self.head == "graph":
            return self.decoder.set_post(**values)
        self.post_cfg = post_settings(values, base=self.post_cfg)
        return self.post_cfg

    def postprocess(self, out: dict, **post) -> dict:
        """`postprocess.postprocess` of decoder outputs with the model's settings (``post_cfg``) updated by
        ``post``: (B, N) tensors ``instance``, ``cls``, ``score`` and the (B, N) ``stuff_prob``. The graph head
        has its thresholds in its own config (``graph``) and no stuff probability."""
        if self.head == "graph":
            return self.decoder.postprocess(out, self.background_class)
        z, c = out["layers"][-1]
        valid = out["valid"]
        stuff = torch.zeros(valid.shape, device=z.device)
        stuff[out["batch"], out["col"]] = torch.sigmoid(out["stuff_logits"].float())
        cfg = post_settings(post, base=self.post_cfg)
        return postprocess(z, c, stuff, valid, self.stuff_classes, self.background_class, **cfg) | {"stuff_prob": stuff}

    @torch.no_grad()
    def infer(self, point, **post) -> list[dict]:
        """Post-processed predictions for a collated batch: per event a dict of (N_b,) numpy arrays
        ``instance`` (rank+1, −1 stuff), ``cls``, ``score``, ``stuff_prob`` and, in eval mode, (N_b, K)
        ``seg_logits``, in the batch's row order. ``post`` overrides the post-processing settings."""
        out = self(point)
        pp = self.postprocess(out, **post)
        res = []
        off = 0
        for b, n in enumerate(out["counts"].tolist()):
            r = {k: v[b, :n].cpu().numpy() for k, v in pp.items()}
            if "seg_logits" in out:
                r["seg_logits"] = out["seg_logits"][off:off + n].float().cpu().numpy()
            res.append(r)
            off += n
        return res

    @property
    def class_key(self) -> str:
        """Name of `predict`'s per-point class output: ``pid`` (particle) or ``interaction_class``."""
        return "pid" if self.level == "particle" else "interaction_class"

    def empty_prediction(self, n: int, logits: bool = False) -> dict:
        """`predict`'s output for an event of ``n`` rows none of which is predicted (all removed)."""
        out = {"instance": np.full(n, -1, np.int64), self.class_key: np.full(n, -1, np.int64),
               "score": np.zeros(n, np.float32)}
        if logits:
            out["seg_logits"] = np.zeros((n, self.num_classes), np.float32)
        return out

    @torch.no_grad()
    def predict(self, event, logits: bool = False) -> dict:
        """Per raw row of ``event``: ``instance`` (int64, −1 stuff/LED or removed by the cut), ``pid``
        (particle level; the class, −1 for cut rows) or ``interaction_class`` (interaction level), ``score``
        (float32 confidence; 0 for cut rows); with ``logits`` also ``seg_logits`` (N, K) float32, the
        official Detector's per-point class logits (0 for cut rows). Post-processing uses ``post_cfg``."""
        from ..io.events import run_on_event

        out = self.empty_prediction(len(event), logits)
        if len(event) == 0 or not (event.energy > self.energy_threshold).any():  # nothing survives the cut
            return out
        d, r = run_on_event(self, event, self.energy_threshold, lambda point: self.infer(point)[0])
        idx = d["index"]
        out["instance"][idx], out[self.class_key][idx], out["score"][idx] = r["instance"], r["cls"], r["score"]
        if logits:
            out["seg_logits"][idx] = r["seg_logits"]
        return out

    def embed(self, event) -> np.ndarray:
        """(N_after_cut, sum(enc_channels)) backbone features, rows in raw-event order of the kept points."""
        from ..io.events import embed_event

        return embed_event(self, event, self.energy_threshold, self.features)


def model_from_config(cfg: dict) -> PanopticModel:
    """Build a `PanopticModel` from a weights ``config.json`` dict (task "panoptic"), for `io.load_model`.
    Also accepts an official Panda ``Detector`` config (``full_in_channels``, ``num_queries``, ...)."""
    if "level" not in cfg and ("num_queries" in cfg or "full_in_channels" in cfg):
        return PanopticModel(**from_panda_config(cfg))
    return PanopticModel(cfg["backbone"], level=cfg.get("level", "particle"), mode=cfg.get("mode", "full"),
                         decoder=cfg.get("decoder"), loss=cfg.get("loss"), postprocess=cfg.get("postprocess"),
                         energy_threshold=cfg.get("energy_threshold", ENERGY_THRESHOLD_MEV),
                         stuff_classes=cfg.get("stuff_classes"), exact_backbone=bool(cfg.get("exact_backbone", False)),
                         head=cfg.get("head", "mask"), graph=_saved_graph_kwargs(cfg.get("graph")))


def _saved_graph_kwargs(graph: dict | None) -> dict | None:
    """A saved graph head's settings; heads saved before the endpoint edge features (commit b0c2417 and
    earlier) have no ``endpoint_features`` key and were built without them, heads saved before the local
    directions (commit e3b2ef9 and earlier) no ``local_directions`` key, heads saved before the LED fragments
    (commit 951dc17 and earlier) no ``led_fragments`` key."""
    return None if graph is None else {"endpoint_features": False, "local_directions": False, "led_fragments": False,
                                       **graph}


# ------------------------------------------------------------------------------------------- runs


def evaluate_model(model: PanopticModel, dataset, batch_size: int = 4, max_events=None, device=None,
                   exclude_led: bool = False) -> dict:
    """docs/design.md §7.2 / docs/design.md §7.3 metrics of ``model`` on ``dataset`` (post-transform points) + timings.

    ``exclude_led``: score only points whose true semantic class is not LED (class 4), in both the
    predicted and the true instances."""
    from ..metrics.panoptic import PanopticAccumulator
    from .common import iterate_batches, skipped_list

    skipped = skipped_list(dataset)
    k0 = len(skipped)
    device = device or next(model.parameters()).device
    lv = LEVELS[model.level]
    acc = PanopticAccumulator(len(lv["class_names"]), lv["class_names"])
    was = model.training
    model.eval()
    n, n_points, t_fwd, t_post = 0, 0, 0.0, 0.0
    try:
        with torch.no_grad():
            for batch in iterate_batches(dataset, batch_size, max_events, model=model):
                batch = batch.to(device)
                t0 = time.perf_counter()
                out = model(batch)
                t1 = time.perf_counter()
                pp = model.postprocess(out)
                t_fwd += t1 - t0
                t_post += time.perf_counter() - t1
                inst, seg = level_labels(batch, model.level)
                off = [0] + _as_tensor(batch["offset"]).tolist()
                motif = _as_tensor(batch["segment_motif"]).cpu()
                for b in range(len(off) - 1):
                    sl = slice(off[b], off[b + 1])
                    m = off[b + 1] - off[b]
                    keep = motif[sl] != LED_CLASS if exclude_led else torch.ones(m, dtype=torch.bool)
                    pred_inst, true_inst = pp["instance"][b, :m].cpu()[keep], inst[sl].cpu()[keep]
                    n_points += int(keep.sum())
                    if model.level == "particle":
                        acc.update(pred_inst, true_inst, pp["cls"][b, :m].cpu()[keep], seg[sl].cpu()[keep])
                    else:
                        acc.update(pred_inst, true_inst)
                    n += 1
    finally:
        model.train(was)
    res = acc.compute()
    res.update({"num_events": float(n), "num_points": n_points, "skipped_events": len(skipped) - k0, "forward_s_per_event": t_fwd / max(n, 1),
                "postprocess_s_per_event": t_post / max(n, 1), "level": model.level})
    return res


def build_panoptic_model(mode: str, level: str, cfg: dict, weights=None) -> PanopticModel:
    """Model for a training run: pretrained backbone (decoder/full) or a model preset (scratch)."""
    kw = dict(level=level, mode=mode, decoder=cfg.get("decoder"), loss=cfg.get("loss"),
              postprocess=cfg.get("postprocess"), energy_threshold=cfg.get("data", {}).get("energy_threshold", ENERGY_THRESHOLD_MEV),
              head=cfg.get("head", "mask"), graph=cfg.get("graph"))
    if mode == "scratch":
        if weights:
            raise UserError("--mode scratch trains from random initialisation; drop --weights")
        from ..config import load_config

        return PanopticModel(load_config(cfg.get("model", {}).get("preset", "small"), "model"), **kw)
    if not weights:
        raise UserError(f"--mode {mode} needs pretrained --weights (or use --mode scratch)")
    from .weights import load_backbone_into, pretrained_backbone

    bb, sd = pretrained_backbone(weights)
    model = PanopticModel(bb, **kw)
    load_backbone_into(model.backbone, sd, weights, keep_decoder=False)
    return model


def level_config(cfg: dict, level: str) -> dict:
    """``cfg`` with its ``levels.<level>`` section (``decoder``/``train``/``loss`` keys) merged over the
    shared sections, e.g. the interaction level's own OneCycle ``pct_start`` (docs/model.md §4.5)."""
    lv_cfg = (cfg.get("levels") or {}).get(level, {})
    for sec in ("decoder", "train", "loss"):
        cfg[sec] = {**cfg.get(sec, {}), **lv_cfg.get(sec, {})}
    return cfg


def run_train(args) -> dict:
    """``larpanda train panoptic``: label subset → fit → ``OUT/weights`` + ``OUT/val_metrics.json``."""
    from .runs import feature_cache_fits, run_datasets, task_config, train_and_save

    if getattr(args, "head", None) == "graph" and not args.config:
        args.config = "graph"  # the graph head's CPU recipe (configs/panoptic/graph.yaml)
    cfg, seed = task_config(args, "panoptic", args.level)
    cfg = level_config(cfg, args.level)
    if getattr(args, "head", None):
        cfg["head"] = args.head
    full, train_set, val_set = run_datasets(args, cfg, seed)
    model = build_panoptic_model(args.mode, args.level, cfg, args.weights)
    data_cfg = cfg.get("data", {})
    if data_cfg.get("cache_features") and args.mode == "decoder":
        if data_cfg.get("augment"):
            raise UserError("data.cache_features needs data.augment: null (augmented events change the features)")
        if feature_cache_fits(model, train_set):
            model.enable_feature_cache()  # each training event's frozen features once, reused every epoch
    cfg["run"] = {"task": "panoptic", "level": args.level, "mode": args.mode, "head": model.head, "label_fraction": float(args.label_fraction),
                  "labelled_events": len(train_set), "available_events": len(full), "weights": args.weights, "seed": seed}
    return train_and_save(model, cfg, args, train_set, val_set, evaluate_model, ("f1", "ari", "pq", "matched_iou"))


def run_evaluate(args, model) -> dict:
    """``larpanda evaluate`` of panoptic weights (``model``, already loaded): metrics JSON on stdout and
    (atomically) at ``--out``."""
    from ..atomic import atomic_write_json
    from .common import evaluation_dataset
    from .postprocess_settings import parse_overrides

    post = parse_overrides(args.post)
    model = model.to(args.device)
    ds = evaluation_dataset(args, model)
    post_used = model.set_postprocess(**post)
    metrics = evaluate_model(model, ds, args.batch_size, args.max_events, device=args.device, exclude_led=args.exclude_led)
    metrics["weights"] = str(args.weights)
    metrics["exclude_led"] = bool(args.exclude_led)
    metrics["postprocess"] = dict(post_used)
    if not args.quiet or not args.out:
        print(json.dumps({k: v for k, v in metrics.items() if k != "pid_confusion"}, indent=1))
    if args.out:
        atomic_write_json(args.out, metrics)
    if args.report:
        from ..viz.report import build_report

        row = {k: v for k, v in metrics.items() if k != "weights"}
        if model.level == "particle" and "pid_confusion" in row:
            row["pid_classes"] = list(LEVELS["particle"]["class_names"])
        build_report({"panoptic": [row]}, args.report)
    return metrics


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: larpanda train panoptic / larpanda evaluate --task panoptic")
