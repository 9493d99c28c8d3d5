"""Panoptic head (spec-model §4.1): parameter counts, official key layout, forward shapes/masking."""

import torch

from larpanda.tasks.panoptic_head import NEG, MaskQueryDecoder

PID_KEYS_BLOCK = [
    "norm1.weight", "norm1.bias", "norm_kv.weight", "norm_kv.bias", "self_attn.q.weight", "self_attn.q.bias",
    "self_attn.kv.weight", "self_attn.kv.bias", "self_attn.proj.weight", "self_attn.proj.bias",
    "norm2.weight", "norm2.bias", "cross_attn.q_proj.weight", "cross_attn.q_proj.bias",
    "cross_attn.k_proj.weight", "cross_attn.k_proj.bias", "cross_attn.v_proj.weight", "cross_attn.v_proj.bias",
    "cross_attn.proj.weight", "cross_attn.proj.bias", "norm3.weight", "norm3.bias", "mlp.fc1.weight",
    "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "mask_mlp.fc1.weight", "mask_mlp.fc1.bias",
    "mask_mlp.fc2.weight", "mask_mlp.fc2.bias",
]


def official_keys(pid: bool, C: int, Q: int):
    """The decoder.* key list and shapes of spec-model §4.1 ("Decoder-head state keys")."""
    keys = {"query_feat.weight": (Q, 256), "query_embed.weight": (Q, 256), "pos_emb.0.weight": (256, 3),
            "pos_emb.0.bias": (256,), "pos_emb.2.weight": (256, 256), "pos_emb.2.bias": (256,),
            "final_norm.weight": (256,), "final_norm.bias": (256,), "stuff_head.0.weight": (256, 1232),
            "stuff_head.0.bias": (256,), "stuff_head.2.weight": (1, 256), "stuff_head.2.bias": (1,)}
    for i in range(3):
        for k in PID_KEYS_BLOCK:
            keys[f"blocks.{i}.{k}"] = None
    keys["blocks.0.self_attn.kv.weight"] = (512, 256)
    if pid:
        keys.update({"cls_pred.fc1.weight": (256, 256), "cls_pred.fc1.bias": (256,), "cls_pred.fc2.weight": (C + 1, 256),
                     "cls_pred.fc2.bias": (C + 1,), "full_point_proj.fc1.weight": (256, 1232),
                     "full_point_proj.fc1.bias": (256,), "full_point_proj.fc2.weight": (256, 256),
                     "full_point_proj.fc2.bias": (256,)})
    else:
        keys.update({"cls_pred.weight": (C + 1, 256), "cls_pred.bias": (C + 1,), "full_point_proj.weight": (256, 1232),
                     "full_point_proj.bias": (256,)})
    return keys


def test_param_counts_match_reference():
    pid = MaskQueryDecoder()
    vtx = MaskQueryDecoder(num_classes=2, num_queries=12, mlp_point_proj=False, stuff_classes=(0,))
    assert sum(p.numel() for p in pid.parameters()) == 4_405_256  # spec-model §4.1
    assert sum(p.numel() for p in vtx.parameters()) == 4_262_404
    assert sum(p.numel() for p in pid.blocks[0].parameters()) == 1_185_536


def test_official_key_layout_loads_strict():
    for pid, C, Q in ((True, 6, 32), (False, 2, 12)):
        m = MaskQueryDecoder(num_classes=C, num_queries=Q, mlp_point_proj=pid)
        sd = m.state_dict()
        ref = official_keys(pid, C, Q)
        assert set(sd) == set(ref)
        for k, shape in ref.items():
            if shape is not None:
                assert tuple(sd[k].shape) == shape, k
        synthetic = {k: torch.randn_like(v) for k, v in sd.items()}
        m2 = MaskQueryDecoder(num_classes=C, num_queries=Q, mlp_point_proj=pid)
        m2.load_state_dict(synthetic, strict=True)
        assert torch.equal(m2.query_feat.weight, synthetic["query_feat.weight"])


def test_forward_masks_padding_and_stuff_and_is_event_independent():
    torch.manual_seed(0)
    m = MaskQueryDecoder(full_in_channels=16, hidden_channels=32, num_heads=4, num_queries=5).eval()
    feat, coord = torch.randn(70, 16), torch.randn(70, 3)
    thing = torch.rand(70) > 0.3
    out = m(feat, coord, torch.tensor([30, 70]), thing=thing)
    z, c = out["layers"][-1]
    assert z.shape == (2, 5, 40) and c.shape == (2, 5, 7) and len(out["layers"]) == 3
    assert (z[0, :, 30:] == NEG).all()  # padding of the shorter event
    assert (z[0, :, :30][:, ~thing[:30]] == NEG).all()  # stuff points are filtered
    # the second event alone gives the same outputs (no cross-event attention)
    out2 = m(feat[30:], coord[30:], torch.tensor([40]), thing=thing[30:])
    assert torch.allclose(out2["layers"][-1][0][0], z[1], atol=1e-5)
    assert torch.allclose(out2["layers"][-1][1][0], c[1], atol=1e-5)


def test_self_attention_pos_on_keys_switch():
    torch.manual_seed(0)
    a = MaskQueryDecoder(full_in_channels=8, hidden_channels=32, num_heads=4, num_queries=4, pos_on_keys=True)
    b = MaskQueryDecoder(full_in_channels=8, hidden_channels=32, num_heads=4, num_queries=4, pos_on_keys=False)
    b.load_state_dict(a.state_dict())
    x, p = torch.randn(1, 4, 32), torch.randn(1, 4, 32)
    sa, sb = a.blocks[0].self_attn, b.blocks[0].self_attn
    assert not torch.allclose(sa(x, p), sb(x, p))
    assert torch.allclose(sa(x, torch.zeros_like(p)), sb(x, torch.zeros_like(p)), atol=1e-6)


def test_stuff_points_never_reach_the_decoder():
    """As in the reference, only thing points are projected and attended: changing the features and
    coordinates of the filtered (stuff) points changes neither the queries' masks on thing points nor the
    class logits, and gives those points no gradient through the decoder."""
    torch.manual_seed(0)
    m = MaskQueryDecoder(full_in_channels=16, hidden_channels=32, num_heads=4, num_queries=5).eval()
    feat, coord = torch.randn(70, 16), torch.randn(70, 3)
    thing = torch.rand(70) > 0.3
    off = torch.tensor([30, 70])
    out = m(feat, coord, off, thing=thing)
    feat2, coord2 = feat.clone().requires_grad_(True), coord.clone()
    with torch.no_grad():
        feat2[~thing] += 5 * torch.randn(int((~thing).sum()), 16)
        coord2[~thing] += 3.0
    out2 = m(feat2, coord2, off, thing=thing)
    for (z, c), (z2, c2) in zip(out["layers"], out2["layers"]):
        assert torch.allclose(z, z2, atol=1e-5) and torch.allclose(c, c2, atol=1e-5)
    sum(z.clamp(min=-50).sum() + c.sum() for z, c in out2["layers"]).backward()
    assert feat2.grad[~thing].abs().max() == 0 and feat2.grad[thing].abs().max() > 0


def test_cpu_bf16_autocast_forward_close_to_fp32():
    """train.amp=bf16 with amp_cpu: the decoder runs under CPU autocast (attention kept in fp32); mask and
    class logits stay within bf16 rounding of the fp32 forward, and the masking is unchanged."""
    torch.manual_seed(0)
    m = MaskQueryDecoder(full_in_channels=16, hidden_channels=32, num_heads=4, num_queries=5).eval()
    feat, coord = torch.randn(70, 16), torch.randn(70, 3)
    thing = torch.rand(70) > 0.3
    off = torch.tensor([30, 70])
    ref = m(feat, coord, off, thing=thing)["layers"][-1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, c = m(feat, coord, off, thing=thing)["layers"][-1]
    assert z.dtype == torch.bfloat16
    assert ((z == NEG) == (ref[0] == NEG)).all()
    keep = ref[0] != NEG
    assert torch.allclose(z.float()[keep], ref[0][keep], atol=0.05, rtol=0.05)
    assert torch.allclose(c.float(), ref[1], atol=0.05, rtol=0.05)
