"""Official Panda ``Detector`` configs → `PanopticModel` kwargs (docs/model.md §4.7, docs/design.md §4.6)."""

from __future__ import annotations

from ..errors import UserError

# The official Detector's constructor defaults (Panda: panda/model_panoptic.py ``Detector``) of the keys
# larpanda reads; the post-processing ones are `postprocess.DEFAULTS`.
DETECTOR_DEFAULTS = dict(num_queries=32, depth=3, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, layer_scale=None,
                         pre_norm=True, pos_emb=True, query_type="learned", use_stuff_head=True, stuff_classes=None,
                         mlp_point_proj=False, supervise_attn_mask=True)
# Official Detector kwargs larpanda implements only at one value (the Panda one).
_DETECTOR_ONLY = dict(pre_norm=True, query_type="learned", use_stuff_head=True, supervise_attn_mask=True)


def from_panda_config(cfg: dict) -> dict:
    """`PanopticModel` kwargs from an official ``Detector(**config)`` dict (docs/model.md §4.7, docs/design.md §4.6).

    Omitted keys take the official Detector defaults (`DETECTOR_DEFAULTS`: e.g. ``qkv_bias`` False,
    ``num_queries`` 32, ``mlp_point_proj`` False, no stuff classes) and the official PTv3 defaults for the
    backbone, which is used as configured (mask token included). Every post-processing setting of the config
    is kept (`postprocess.DEFAULTS`). Keys that are not Detector kwargs (pimm training keys such as
    ``criteria``) are ignored, as the official loader does; a Detector setting larpanda does not implement
    (``pre_norm``, ``query_type``, ``use_stuff_head``, ``supervise_attn_mask`` other than Panda's, a backbone
    without ``enc_mode``, ``num_classes`` other than 6 or 2) is a `UserError`."""
    from ..nn import ptv3
    from .postprocess import DEFAULTS as POST_DEFAULTS

    missing = [k for k in ("num_classes", "hidden_channels", "num_heads", "backbone") if k not in cfg]
    if missing:
        raise UserError(f"official Detector config: missing {', '.join(missing)}")
    c = {**DETECTOR_DEFAULTS, **cfg}
    for k, v in _DETECTOR_ONLY.items():
        if c[k] != v:
            raise UserError(f"official Detector config: {k}={c[k]!r} is not supported (only {v!r})")
    nc = int(c["num_classes"])
    levels = {6: "particle", 2: "interaction"}
    if nc not in levels:
        raise UserError(f"official Detector config: num_classes={nc} is not supported (6: particle, 2: interaction)")
    bb = {k: v for k, v in dict(c["backbone"]).items() if k != "type"}
    full = {**ptv3.OFFICIAL_DEFAULTS, **bb}
    if not full["enc_mode"]:
        raise UserError("official Detector config: the backbone must have enc_mode=True (a backbone with its own "
                        "PTv3 decoder is not supported)")
    width = int(sum(full["enc_channels"]))
    if "full_in_channels" in c and int(c["full_in_channels"]) != width:
        raise UserError(f"official Detector config: full_in_channels={c['full_in_channels']} but the backbone "
                        f"gives {width} up-cast features")
    dec = {k: c[k] for k in ("hidden_channels", "num_heads", "num_queries", "depth", "mlp_ratio", "qkv_bias",
                             "mlp_point_proj", "pos_emb", "qk_scale", "layer_scale")}
    dec["pos_on_keys"] = False  # Panda inference self-attention (docs/model.md §4.1)
    post = {k: c[k] for k in POST_DEFAULTS if k in c}
    stuff = [] if c["stuff_classes"] is None else [int(x) for x in c["stuff_classes"]]
    return dict(backbone=bb, level=levels[nc], mode="full", decoder=dec, postprocess=post, stuff_classes=stuff,
                exact_backbone=True)
