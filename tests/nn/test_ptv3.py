"""PT-v3m2 properties: batch invariance, eval determinism, training shuffles, presets fwd+bwd, decoder,
mask token, partial up-cast."""

from __future__ import annotations

import pytest
import torch

from larpanda.config import load_config
from larpanda.data.point import Point, collate
from larpanda.nn.ptv3 import PointTransformerV3, upcast


def _event(fixtures_dir, n=None, rotate=False, scale=1.0):
    i = torch.load(fixtures_dir / "panda_ref_small_detailed.pt", weights_only=True)["inputs_single"]
    coord, grid, feat = i["coord"], i["grid_coord"], i["feat"].clone()
    if rotate:  # 90 degrees about z: (x, y) -> (-y, x)
        coord = torch.stack([-coord[:, 1], coord[:, 0], coord[:, 2]], 1)
        grid = torch.stack([grid[:, 1].max() - grid[:, 1], grid[:, 0], grid[:, 2]], 1)
        feat = torch.cat([coord, feat[:, 3:] * scale], 1)
    if n is not None:
        coord, grid, feat = coord[:n], grid[:n], feat[:n]
        grid = grid - grid.min(0).values
    return {"coord": coord, "grid_coord": grid, "feat": feat, "offset": torch.tensor([len(coord)])}


def _model(**over):
    cfg = load_config("tiny", "model")
    cfg.update(enc_patch_size=[64, 64, 32, 32, 32], drop_path=0.0, **over)
    torch.manual_seed(0)
    m = PointTransformerV3(**cfg)
    with torch.no_grad():  # non-trivial layer scales so attention/MLP paths matter numerically
        for name, p in m.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.2, 0.8)
    return m


def test_batching_equals_alone(fixtures_dir):
    m = _model().eval()
    # event sizes chosen so later stages have events below the patch size (masked small-event path)
    e0, e1, e2 = _event(fixtures_dir), _event(fixtures_dir, n=400, rotate=True, scale=1.7), _event(fixtures_dir, n=150)
    with torch.no_grad():
        alone = [m(collate([e])).feat for e in (e0, e1, e2)]
        both = m(collate([e0, e1, e2])).feat
    torch.testing.assert_close(both, torch.cat(alone), atol=1e-5, rtol=0)


def test_eval_deterministic_train_shuffles(fixtures_dir):
    m = _model().eval()
    e = collate([_event(fixtures_dir)])
    with torch.no_grad():
        a, b = m(Point(e)).feat, m(Point(e)).feat
        assert torch.equal(a, b)
        m.train()
        torch.manual_seed(1)
        outs = [m(Point(e)).feat for _ in range(4)]
    # with drop_path 0 the only randomness in train mode is the per-stage order shuffle
    assert any((o - a).abs().max() > 1e-4 for o in outs)
    m2 = _model(shuffle_orders=False).train()
    with torch.no_grad():
        torch.testing.assert_close(m2(Point(e)).feat, a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "small", "panda-base"])
def test_forward_backward_every_preset(fixtures_dir, preset):
    cfg = load_config(preset, "model")
    if preset == "panda-base":  # skip the slow trunc_normal init of 90M parameters
        with torch.device("meta"):
            m = PointTransformerV3(**cfg)
        m = m.to_empty(device="cpu")
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.02)
    else:
        m = PointTransformerV3(**cfg)
    m.train()
    n = 150
    e = collate([_event(fixtures_dir, n=n)])
    e["mask"] = torch.rand(n, generator=torch.Generator().manual_seed(0)) < 0.3
    out = m(e)
    assert out.feat.shape == (n, sum(cfg["enc_channels"]))
    out.feat.square().mean().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert grads["embedding.mask_token"] is not None and grads["embedding.mask_token"].abs().sum() > 0
    assert grads["enc.enc0.block0.cpe.0.weight"].abs().sum() > 0
    assert grads["enc.enc4.block0.attn.qkv.weight"].abs().sum() > 0
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)


def test_mask_token_replaces_embedding(fixtures_dir):
    m = _model().eval()
    e = collate([_event(fixtures_dir, n=300)])
    with torch.no_grad():
        m.embedding.mask_token.fill_(3.0)
        mask = torch.zeros(300, dtype=torch.bool)
        mask[:10] = True
        p = m.embedding(Point(e, mask=mask))
        assert (p.feat[:10] == 3.0).all() and not (p.feat[10:] == 3.0).all()


def test_partial_upcast_level2(fixtures_dir):
    m = _model().eval()
    e = collate([_event(fixtures_dir)])
    with torch.no_grad():
        full = m(Point(e)).feat
        p4 = m(Point(e), upcast=False)
        p2 = upcast(p4, 2)
    ch = m.kwargs["enc_channels"]
    assert p2.feat.shape[1] == ch[2] + ch[3] + ch[4] and "pooling_parent" in p2
    # the stage-2 rows up-cast to stage 0 give the last columns of the full up-cast
    inv = p2.pooling_inverse[p2.pooling_parent.pooling_inverse]
    torch.testing.assert_close(p2.feat[inv], full[:, ch[0] + ch[1]:], atol=0, rtol=0)


def test_decoder_mode(fixtures_dir):
    m = _model(enc_mode=False).train()
    e = collate([_event(fixtures_dir, n=500), _event(fixtures_dir, n=300, rotate=True)])
    out = m(e)
    assert out.feat.shape == (800, m.kwargs["dec_channels"][0]) and "pooling_parent" not in out
    out.feat.sum().backward()
    assert m.dec.dec0.up.proj_skip[0].weight.grad.abs().sum() > 0
    keys = set(m.state_dict())
    assert {"dec.dec3.up.proj.0.weight", "dec.dec0.up.proj_skip.1.bias", "dec.dec0.block0.cpe.0.weight"} <= keys
    assert list(k.split(".")[1] for k in m.state_dict() if k.startswith("dec."))[0] == "dec3"
