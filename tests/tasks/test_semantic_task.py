"""Semantic task: Lovász loss, label subsets, modes/freezing/lr rules, strict official-key loading, predict."""

import numpy as np
import pytest
import torch

from larpanda.config import load_config
from larpanda.data.point import collate
from larpanda.errors import UserError
from larpanda.metrics.semantic import semantic_metrics
from larpanda.tasks.common import label_subset
from larpanda.tasks.semantic import SemanticModel, lovasz_softmax, semantic_loss

TINY = load_config("tiny", "model")


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lovasz_equals_jaccard_loss_at_hard_predictions():
    rng = np.random.default_rng(0)
    gt = torch.as_tensor(rng.integers(0, 4, 200))
    pred = torch.where(torch.rand(200) < 0.6, gt, torch.as_tensor(rng.integers(0, 4, 200)))
    probs = torch.nn.functional.one_hot(pred, 5).double()
    m = semantic_metrics(pred.numpy(), gt.numpy(), num_classes=5)
    present = np.unique(gt.numpy())
    expected = np.mean([1 - m[f"IoU_{m['class_names'][c]}"] for c in present])
    assert float(lovasz_softmax(probs, gt)) == pytest.approx(expected, abs=1e-6)
    assert float(lovasz_softmax(torch.nn.functional.one_hot(gt, 5).double(), gt)) == pytest.approx(0.0, abs=1e-9)
    # ignored points do not count
    gt2 = gt.clone()
    gt2[:50] = -1
    assert float(lovasz_softmax(probs[50:], gt[50:])) == pytest.approx(float(lovasz_softmax(probs, gt2)))


def test_semantic_loss_is_ce_plus_005_lovasz():
    logits = torch.randn(50, 5)
    labels = torch.randint(0, 5, (50,))
    total, ce, lov = semantic_loss(logits, labels)
    assert float(ce) == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels)))
    assert float(total) == pytest.approx(float(ce) + 0.05 * float(lov))


def test_label_subsets_are_nested_and_nonempty():
    small, mid, big = (label_subset(5000, f, seed=3) for f in (0.001, 0.01, 0.1))
    assert len(small) == 5 and len(mid) == 50 and len(big) == 500
    assert set(small) <= set(mid) <= set(big)
    assert len(label_subset(10, 0.0001, 0)) == 1
    np.testing.assert_array_equal(label_subset(100, 0.1, 7), label_subset(100, 0.1, 7))
    assert not np.array_equal(label_subset(1000, 0.1, 1), label_subset(1000, 0.1, 2))
    with pytest.raises(UserError):
        label_subset(10, 1.5, 0)


def _toy_point(n=300, seed=0):
    rng = np.random.default_rng(seed)
    g = np.unique(rng.integers(0, 30, (n, 3)), axis=0)
    c = (g * 0.0015).astype(np.float32)
    e = rng.random((len(g), 1)).astype(np.float32)
    return dict(coord=c, grid_coord=g.astype(np.int64), energy=e, feat=np.c_[c, e],
                segment_motif=rng.integers(0, 5, len(g)), offset=np.array([len(g)]))


def test_modes_freeze_and_lr_rules():
    lin = SemanticModel("linear", backbone=TINY)
    trainable = [n for n, p in lin.named_parameters() if p.requires_grad]
    assert trainable == ["seg_head.weight", "seg_head.bias"]
    assert lin.seg_head.in_features == sum(TINY["enc_channels"])
    dec = SemanticModel("decoder", backbone=TINY)
    assert dec.seg_head.in_features == TINY["dec_channels"][0]
    for n, p in dec.named_parameters():
        assert p.requires_grad == (not n.startswith(("backbone.enc.", "backbone.embedding."))), n
    full = SemanticModel("full", backbone=TINY)
    assert all(p.requires_grad for p in full.parameters())
    groups = full.param_groups({"layer_decay": 0.9, "backbone_lr_mult": 0.05})
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    sc = {n: scale_of[id(p)] for n, p in full.named_parameters()}
    assert len(sc) == sum(len(g["params"]) for g in groups)  # every trainable parameter in exactly one group
    n_dec, n_enc = sum(TINY["dec_depths"]), sum(TINY["enc_depths"])
    assert sc["backbone.dec.dec0.block0.attn.qkv.weight"] == pytest.approx(0.9 ** (n_dec - 1))
    assert sc["backbone.dec.dec3.block0.attn.qkv.weight"] == pytest.approx(1.0)
    assert sc["backbone.enc.enc0.block0.attn.qkv.weight"] == pytest.approx(0.9 ** (n_enc - 1 + n_dec) * 0.05)
    assert sc["backbone.enc.enc4.block0.attn.qkv.weight"] == pytest.approx(0.9 ** n_dec * 0.05)
    assert sc["backbone.embedding.stem.linear.weight"] == 1.0 and sc["seg_head.weight"] == 1.0
    # a step through the frozen-encoder decoder mode leaves the encoder untouched
    batch = collate([_toy_point(300, 0), _toy_point(200, 1)])
    before = dec.backbone.enc.enc0.block0.attn.qkv.weight.clone()
    loss, logs = dec.training_step(batch, 0)
    loss.backward()
    assert dec.backbone.enc.enc0.block0.attn.qkv.weight.grad is None
    assert dec.seg_head.weight.grad is not None and torch.isfinite(loss)
    torch.testing.assert_close(before, dec.backbone.enc.enc0.block0.attn.qkv.weight)


def test_panda_base_linear_head_width_is_1232():
    base = load_config("panda-base", "model")
    m = SemanticModel("linear", backbone={**base, "enc_depths": [1, 1, 1, 1, 1]})
    assert m.seg_head.in_features == 1232


def test_official_semantic_checkpoint_loads_strict(tmp_path):
    """A panda_semantic.pth-style file (DDP ``module.`` prefix) loads with strict keys into the layout its
    config names; a missing key, an extra key or a linear-layout config is refused with one clear error."""
    from larpanda.io import load_model

    torch.manual_seed(0)
    ref = SemanticModel("decoder", backbone=TINY)
    keys = list(ref.state_dict().keys())
    assert all(k.startswith(("backbone.", "seg_head.")) for k in keys)
    assert "seg_head.weight" in keys and any(k.startswith("backbone.dec.dec0.") for k in keys)
    sd = {"module." + k: torch.randn(v.shape) for k, v in ref.state_dict().items()}
    cfg = {"num_classes": 5, "backbone": {**ref.backbone_kwargs, "type": "PT-v3m2"}, "freeze_backbone": True,
           "mlp_head": False}

    def save(name, state, config=cfg):
        torch.save({"config": config, "state_dict": state}, tmp_path / name)
        return tmp_path / name

    model = load_model(save("ok.pth", sd))
    torch.testing.assert_close(model.state_dict()["seg_head.weight"], sd["module.seg_head.weight"])
    missing = dict(sd)
    missing.pop("module.backbone.dec.dec0.block0.attn.qkv.weight")
    extra = {**sd, "module.backbone.extra.weight": torch.zeros(1)}
    linear = {**cfg, "backbone": {**cfg["backbone"], "enc_mode": True}}
    for path in (save("missing.pth", missing), save("extra.pth", extra), save("linear.pth", sd, linear)):
        with pytest.raises(UserError, match="do not match"):
            load_model(path)


def test_predict_maps_rows_back_and_marks_cut_rows(fixtures_dir):
    from larpanda.data.pilarnet import event_from_labels

    d = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    energy = d["energy"].astype(np.float32).copy()
    energy[:10] = 0.05  # below the 0.13 MeV cut
    ev = event_from_labels(d["voxel"].astype(np.int64), energy, d["segment_motif"].astype(np.int64),
                           d["segment_pid"].astype(np.int64), d["instance_particle"].astype(np.int64),
                           d["instance_interaction"].astype(np.int64))
    torch.manual_seed(0)
    m = SemanticModel("uresnet", uresnet=dict(depth=3, filters=8, reps=1))
    out = m.predict(ev)
    cut = ev.energy <= 0.13
    assert out["semantic"].shape == (len(ev),) and out["semantic_probs"].shape == (len(ev), 5)
    assert (out["semantic"][cut] == -1).all() and (out["semantic"][~cut] >= 0).all()
    np.testing.assert_allclose(out["semantic_probs"][~cut].sum(1), 1.0, rtol=1e-5)
    assert m.embed(ev).shape == (int((~cut).sum()), 8)
    assert m.training  # predict restores the mode
    # an event with nothing above the cut: all rows −1, no crash
    energy[:] = 0.01
    empty = event_from_labels(d["voxel"].astype(np.int64), energy, d["segment_motif"].astype(np.int64),
                              d["segment_pid"].astype(np.int64), d["instance_particle"].astype(np.int64),
                              d["instance_interaction"].astype(np.int64))
    assert (m.predict(empty)["semantic"] == -1).all()


def test_official_pth_layout_loads_through_io(tmp_path):
    """A synthetic panda_semantic.pth ({"config", "state_dict"}, Segmenter kwargs) loads strictly via io."""
    from larpanda.io import load_model

    ref = SemanticModel("full", backbone=TINY)
    bb = {**ref.backbone_kwargs, "type": "PT-v3m2"}
    sd = {k: torch.randn(v.shape) for k, v in ref.state_dict().items()}
    cfg = {"num_classes": 5, "backbone_out_channels": TINY["dec_channels"][0], "backbone": bb,
           "freeze_backbone": False, "mlp_head": False}
    torch.save({"config": cfg, "state_dict": sd}, tmp_path / "panda_semantic.pth")
    model = load_model(tmp_path / "panda_semantic.pth")
    assert model.config["task"] == "semantic" and model.mode == "full"
    torch.testing.assert_close(model.state_dict()["backbone.dec.dec0.block0.attn.qkv.weight"],
                               sd["backbone.dec.dec0.block0.attn.qkv.weight"])
    bad = dict(sd)
    bad.pop("seg_head.bias")
    torch.save({"config": cfg, "state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(UserError):
        load_model(tmp_path / "bad.pth")


def test_task_of_a_pth_comes_from_its_config_not_its_name(tmp_path):
    from larpanda.io import build_model, load_model

    ref = SemanticModel("full", backbone=TINY)
    cfg = {"num_classes": 5, "backbone": {**ref.backbone_kwargs, "type": "PT-v3m2"}, "mlp_head": False}
    torch.save({"config": cfg, "state_dict": ref.state_dict()}, tmp_path / "panda_particle.pth")
    assert load_model(tmp_path / "panda_particle.pth").config["task"] == "semantic"
    torch.save({"config": dict(TINY), "state_dict": build_model(TINY).state_dict()}, tmp_path / "my_semantic.pth")
    assert load_model(tmp_path / "my_semantic.pth").config["task"] == "backbone"


def test_fit_logit_bias_undoes_a_tilt_towards_one_class():
    """Logits tilted by +1 towards class 2 (as CE class weights tilt them towards Michel and delta): the
    fitted offsets take class 2 back down relative to the others and the mIoU goes up; untilted logits of a
    perfect classifier need no offset."""
    from larpanda.metrics.semantic import semantic_metrics
    from larpanda.tasks.semantic import fit_logit_bias

    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 5000)
    z = 2.0 * np.eye(5)[y] + rng.normal(0, 1.0, (5000, 5))
    z[:, 2] += 1.0
    bias = np.array(fit_logit_bias(z, y))
    assert 0.5 <= np.delete(bias, 2).mean() - bias[2] <= 1.5
    assert semantic_metrics((z + bias).argmax(1), y)["mIoU"] > semantic_metrics(z.argmax(1), y)["mIoU"] + 0.01
    assert fit_logit_bias(10.0 * np.eye(5)[y], y) == [0.0] * 5
    y[:10] = -1  # ignored labels are dropped
    assert len(fit_logit_bias(z, y)) == 5


def test_logit_bias_applies_in_eval_only_and_round_trips():
    from larpanda.data.point import collate
    from larpanda.tasks.semantic import model_from_config

    torch.manual_seed(0)
    model = SemanticModel("uresnet", uresnet=dict(filters=4, depth=2, reps=1), logit_bias=[0, 0, 5.0, 0, 0])
    g = torch.arange(30)[:, None].repeat(1, 3)
    batch = collate([{"coord": g.float() / 100, "grid_coord": g, "voxel_coord": g, "feat": torch.zeros(30, 4), "energy": torch.ones(30, 1)}])
    model.eval()
    with torch.no_grad():
        biased = model(batch)
        model.logit_bias = None
        plain = model(batch)
        model.train()  # in training the loss sees the raw logits
        model.logit_bias = [0, 0, 5.0, 0, 0]
        torch.manual_seed(1)
        trained = model(batch)
        torch.manual_seed(1)
        raw = model.seg_head(model.features(batch))
    assert torch.allclose(biased - plain, torch.tensor([0, 0, 5.0, 0, 0]).expand_as(plain))
    assert torch.allclose(trained, raw)
    again = model_from_config(model.config)
    assert again.logit_bias == [0, 0, 5.0, 0, 0]
    with pytest.raises(Exception, match="logit_bias"):
        SemanticModel("uresnet", uresnet=dict(filters=4, depth=2, reps=1), logit_bias=[1.0])
