"""PanopticModel: modes, key layout, predict alignment, training signal (tiny backbone, small head)."""

import numpy as np
import pytest
import torch

from larpanda.config import load_config
from larpanda.data.point import collate
from larpanda.data.transforms import prepare
from larpanda.tasks.panoptic import PanopticModel, from_panda_config, model_from_config

SMALL_HEAD = dict(hidden_channels=32, num_heads=4)


@pytest.fixture(scope="module")
def event(fixtures_dir):
    from larpanda.data.pilarnet import event_from_labels

    d = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    i64 = lambda k: d[k].astype(np.int64)  # noqa: E731
    energy = d["energy"].copy()
    energy[::50] = 0.05  # some rows below the 0.13 MeV cut
    return event_from_labels(i64("voxel"), energy, i64("segment_motif"), i64("segment_pid"),
                             i64("instance_particle"), i64("instance_interaction"))


def _model(level="particle", mode="decoder", decoder=None):
    torch.manual_seed(0)
    return PanopticModel(load_config("tiny", "model"), level=level, mode=mode, decoder={**SMALL_HEAD, **(decoder or {})})


def test_decoder_mode_freezes_backbone_full_mode_trains_it(event):
    batch = collate([prepare(event)])
    for mode, bb_grad in (("decoder", False), ("full", True)):
        m = _model(mode=mode).train()
        loss, logs = m.training_step(batch, 0)
        assert torch.isfinite(loss) and {"loss_focal", "loss_dice", "loss_cls", "loss_stuff"} <= set(logs)
        loss.backward()
        assert all(p.grad is not None for p in m.decoder.parameters())
        assert any(p.grad is not None for p in m.backbone.parameters()) == bb_grad
        groups = m.param_groups({"layer_decay": 0.97})
        n_bb = sum(p.numel() for g in groups for p in g["params"] if any(p is q for q in m.backbone.parameters()))
        assert (n_bb > 0) == bb_grad
        scales = {g["name"]: g["lr_scale"] for g in groups}
        assert pytest.approx(0.97 ** 2) in scales.values()  # decoder block 0 (spec-model §4.4)


def test_predict_rows_align_with_raw_event(event):
    m = _model().eval()
    p = m.predict(event)
    d = prepare(event)
    n = len(event)
    assert set(p) == {"instance", "pid", "score"}
    assert all(v.shape == (n,) for v in p.values())
    cut = np.setdiff1d(np.arange(n), d["index"])
    assert len(cut) > 0 and (p["instance"][cut] == -1).all() and (p["pid"][cut] == -1).all()
    assert (p["pid"][d["index"]] >= 0).all()
    emb = m.embed(event)
    assert emb.shape == (len(d["index"]), m.full_in_channels)
    pi = _model(level="interaction").eval().predict(event)
    assert set(pi) == {"instance", "interaction_class", "score"}


def test_config_round_trip_and_official_prefixes():
    m = _model(level="interaction", mode="full")
    m2 = model_from_config(m.config)
    sd = m.state_dict()
    m2.load_state_dict(sd, strict=True)
    assert m2.level == "interaction" and m2.decoder.num_queries == 12
    assert {k.split(".")[0] for k in sd} == {"backbone", "decoder"}
    assert "decoder.full_point_proj.weight" in sd and "decoder.cls_pred.weight" in sd  # vtx: Linear heads


def test_official_panda_detector_layout_loads_strict():
    """A synthetic panda_particle.pth-shaped state dict (spec-model §4.1 keys, panda-base backbone) loads
    strictly into the model built from a Panda Detector config; the head has 4,405,256 parameters."""
    bb = load_config("panda-base", "model")
    cfg = {"num_classes": 6, "full_in_channels": 1232, "hidden_channels": 256, "num_heads": 16, "num_queries": 32,
           "depth": 3, "mlp_point_proj": True, "qkv_bias": True, "backbone": {"type": "PT-v3m2", **bb}}
    with torch.device("meta"):  # shapes and keys only: no 95M-parameter init on the test machine
        m = PanopticModel(**from_panda_config(cfg))
    assert m.full_in_channels == 1232
    assert sum(p.numel() for p in m.decoder.parameters()) == 4_405_256
    sd = m.state_dict()
    assert "decoder.blocks.2.mask_mlp.fc2.weight" in sd and "decoder.stuff_head.2.weight" in sd
    assert sd["decoder.full_point_proj.fc1.weight"].shape == (256, 1232)
    m.load_state_dict({k: torch.empty_like(v) for k, v in sd.items()}, strict=True, assign=True)
    with pytest.raises(RuntimeError):
        m.load_state_dict({k: v for k, v in sd.items() if "stuff_head" not in k}, strict=True, assign=True)
    assert m.decoder.blocks[0].self_attn.pos_on_keys is False  # Panda inference self-attention


def test_decoder_learns_with_feature_cache(event):
    """Decoder-only steps on one event (frozen features from the cache) cut the dice + class + stuff losses;
    the cached features give exactly the loss of a fresh backbone pass (up to fp16 storage)."""
    m = _model(decoder=dict(num_queries=8))
    d = prepare(event)
    d["file_index"], d["event_index"] = np.array([0]), np.array([3])
    batch = collate([d])
    m.train()
    ref, _ = m.training_step(batch, 0)
    m.enable_feature_cache(torch.float32)
    l0, _ = m.training_step(batch, 0)
    assert list(m.feature_cache) == [(0, 3)]
    l1, _ = m.training_step(batch, 0)
    assert torch.allclose(ref, l0, rtol=1e-5) and torch.allclose(l0, l1, rtol=1e-5)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for step in range(12):
        loss, logs = m.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        key = logs["loss_dice"] + logs["loss_cls"] + logs["loss_stuff"]
        first = key if first is None else first
    assert key < 0.8 * first


def test_full_mode_lr_rules():
    """spec-model §4.4: encoder block idx gets 0.97^(Σdepths−idx−1+3)·backbone_mult; decoder block b 0.97^(2−b)."""
    m = _model(mode="full")
    groups = m.param_groups({"layer_decay": 0.97, "backbone_lr_mult": 0.5})
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(m.named_parameters())
    depths = list(m.backbone.config["enc_depths"])  # tiny: 1,1,1,2,1 → 6 blocks
    last = [k for k in named if k.startswith("backbone.enc.enc4.block0.") and k.endswith("weight")][0]
    first = [k for k in named if k.startswith("backbone.enc.enc0.block0.") and k.endswith("weight")][0]
    assert scale_of[id(named[last])] == pytest.approx(0.97 ** 3 * 0.5)
    assert scale_of[id(named[first])] == pytest.approx(0.97 ** (sum(depths) - 1 + 3) * 0.5)
    assert scale_of[id(named["decoder.blocks.2.mlp.fc1.weight"])] == pytest.approx(1.0)
    assert scale_of[id(named["decoder.blocks.1.mlp.fc1.weight"])] == pytest.approx(0.97)
    assert scale_of[id(named["decoder.query_feat.weight"])] == 1.0
    nowd = {id(p) for g in groups if not g["apply_wd"] for p in g["params"]}
    assert id(named["decoder.query_feat.weight"]) in nowd and id(named["decoder.final_norm.weight"]) in nowd


@pytest.mark.parametrize("level", ["particle", "interaction"])
def test_decoder_overfits_one_event(event, level, one_thread):
    """End-to-end sanity of head + matcher + loss + post-processing + metrics: on one event with frozen
    random features, 150 full-batch steps must reproduce the event's particles (interactions) almost
    exactly. A wrong matcher cost, loss sign, target layout or painting order stops this from happening."""
    from larpanda.metrics.panoptic import PanopticAccumulator
    from larpanda.tasks.matching import detector_loss
    from larpanda.tasks.panoptic import LEVELS, level_labels

    m = _model(level=level, decoder=dict(num_queries=16))
    batch = collate([prepare(event)])
    with torch.no_grad():
        feat = m.features(batch)
    inst, seg = level_labels(batch, level)
    opt = torch.optim.AdamW([p for p in m.decoder.parameters()], lr=3e-3)
    m.train()
    for _ in range(150):
        out = m.decoder(feat, batch["coord"].float(), batch["offset"])
        loss, _ = detector_loss(out, inst, seg, m.stuff_classes, m.num_classes, m.loss_cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    r = m.infer(batch)[0]
    acc = PanopticAccumulator(len(LEVELS[level]["class_names"]), LEVELS[level]["class_names"])
    if level == "particle":
        acc.update(r["instance"], inst, r["cls"], seg)
    else:
        acc.update(r["instance"], inst)
    res = acc.compute()
    assert res["ari"] > 0.97 and res["f1"] >= 0.9, res
    if level == "particle":
        assert res["pid_accuracy"] >= 0.9
