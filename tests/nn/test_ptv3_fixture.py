"""PT-v3m2 against the official Panda outputs recorded in the fixtures (reference-cpu.md)."""

from __future__ import annotations

import pytest
import torch

from larpanda.data.point import Point
from larpanda.io import load_model
from larpanda.nn.ptv3 import PointTransformerV3, upcast
from larpanda.nn.serialization import serialize


def _load(fixtures_dir, name):
    return torch.load(fixtures_dir / name, weights_only=True)


def _inputs(d, device="cpu"):
    i = d["inputs_single"]
    return Point(coord=i["coord"], grid_coord=i["grid_coord"], feat=i["feat"], offset=i["offset"]).to(device)


def _chain(point):
    """Stage Points from stage 0 to the deepest, following pooling_parent."""
    out = []
    while point is not None:
        out.append(point)
        point = point.get("pooling_parent")
    return out[::-1]


@pytest.fixture(scope="module")
def small(fixtures_dir, tmp_path_factory, device):
    d = _load(fixtures_dir, "panda_ref_small.pt")
    pth = tmp_path_factory.mktemp("pth") / "panda_small.pth"
    torch.save({"config": d["config"], "state_dict": d["state_dict"]}, pth)
    return d, load_model(pth).to(device)


@pytest.mark.device
def test_small_fixture_every_stage_and_upcast(small, device):
    d, model = small
    assert not model.training
    o = d["outputs_single"]
    with torch.no_grad():
        stages = _chain(model(_inputs(d, device), upcast=False))
        assert len(stages) == 5
        for s, p in enumerate(stages):
            ref = o[f"stage{s}_feat"]
            assert p.feat.shape == ref.shape
            torch.testing.assert_close(p.feat.cpu(), ref, atol=1e-4, rtol=0)
        up = model(_inputs(d, device), upcast=True).feat.cpu()
    assert up.shape == (1175, 104)
    torch.testing.assert_close(up, o["upcast_feat"], atol=1e-4, rtol=0)


@pytest.mark.device
def test_detailed_fixture_maps_and_features(fixtures_dir, device):
    d = _load(fixtures_dir, "panda_ref_small_detailed.pt")
    o = d["outputs_single"]
    model = PointTransformerV3(**d["config"])
    model.load_state_dict(d["state_dict"], strict=True)
    model.eval().to(device)
    with torch.no_grad():
        stages = _chain(model(_inputs(d, device), upcast=False))
        for s, p in enumerate(stages):
            p = p.to("cpu")
            pre = f"stage{s}"
            assert p.serialized_depth == int(o[f"{pre}.serialized_depth"])
            if s == 0:
                assert torch.equal(p.serialized_code, o["stage0.serialized_code"])
                assert torch.equal(p.serialized_order, o["stage0.serialized_order"].long())
                assert torch.equal(p.serialized_inverse, o["stage0.serialized_inverse"].long())
            else:
                assert torch.equal(p.grid_coord, o[f"{pre}.grid_coord"].long())
                assert torch.equal(p.offset, o[f"{pre}.offset"])
                torch.testing.assert_close(p.feat, o[f"{pre}.feat"], atol=1e-4, rtol=0)
            torch.testing.assert_close(p.feat, o[f"{pre}.feat"], atol=1e-4, rtol=0)
        for s in range(1, 5):
            assert torch.equal(stages[s].pooling_inverse.cpu(), o[f"stage{s}.pooling_inverse"].long())
        # the stage-3 block-0 output is recorded too (2 blocks there: orders 0 and 1)
        final = upcast(stages[-1]).to("cpu")
    torch.testing.assert_close(final.feat, o["final_feat"], atol=1e-4, rtol=0)


def test_detailed_fixture_attention_pad_map(fixtures_dir):
    """Our per-event patch plan reproduces the reference pad/unpad (stage 0, K=16, n=1175)."""
    from larpanda.nn.attention import PatchPlan

    d = _load(fixtures_dir, "panda_ref_small_detailed.pt")
    o = d["outputs_single"]
    pad, unpad = o["stage0.attn_pad"].long(), o["stage0.attn_unpad"].long()
    plan = PatchPlan(torch.tensor([1175]), 16, "cpu")
    # same patches as sets (the reference lists the last patch's real tokens before the repeated ones;
    # attention is permutation-invariant inside a patch)
    ours = plan.full_idx
    assert ours.shape == (pad.numel() // 16, 16)
    assert torch.equal(ours.sort(1).values, pad.view(-1, 16).sort(1).values)
    # each position reads its own token from the same patch as the reference's unpad
    assert torch.equal(ours.reshape(-1)[plan.src], torch.arange(1175))
    assert torch.equal(pad[unpad], torch.arange(1175))
    assert torch.equal(plan.src // 16, unpad // 16)
    cu = o["stage0.attn_cu_seqlens_key"].long()
    assert torch.equal(cu, torch.arange(0, plan.full_idx.numel() + 1, 16))


@pytest.mark.device
def test_pair_serialization_and_pooling(fixtures_dir, device):
    """Two-event batch: codes with batch bits, pooled grids/offsets/inverses as the reference."""
    d = _load(fixtures_dir, "panda_ref_small_detailed.pt")
    i, o = d["inputs_pair"], d["outputs_pair"]
    s = serialize(i["grid_coord"].to(device), i["offset"].to(device))
    assert torch.equal(s["code"].cpu(), o["stage0.serialized_code"])
    model = PointTransformerV3(**d["config"])
    model.load_state_dict(d["state_dict"])
    model.eval().to(device)
    with torch.no_grad():
        pair_in = Point(coord=i["coord"], grid_coord=i["grid_coord"], feat=i["feat"], offset=i["offset"]).to(device)
        stages = _chain(model(pair_in, upcast=False))
    for st in range(1, 5):
        assert torch.equal(stages[st].grid_coord.cpu(), o[f"stage{st}.grid_coord"].long())
        assert torch.equal(stages[st].offset.cpu(), o[f"stage{st}.offset"])
        assert torch.equal(stages[st].pooling_inverse.cpu(), o[f"stage{st}.pooling_inverse"].long())
    # batch invariance: event 0 in the pair == event 0 alone (the reference's stage 4 differs by design)
    with torch.no_grad():
        alone = model(_inputs(d, device), upcast=True).feat.cpu()
        pair = upcast(stages[-1]).feat.cpu()
    torch.testing.assert_close(pair[:1175], alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, d["outputs_single"]["final_feat"], atol=1e-4, rtol=0)
