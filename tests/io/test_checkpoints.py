"""Weights I/O: safetensors round trip, official .pth import, strict keys, pickle refusal."""

from __future__ import annotations

import json
import os

import pytest
import torch

from larpanda.data.point import Point
from larpanda.errors import UserError
from larpanda.io import build_model, load_model, save_model


def _fixture(fixtures_dir):
    return torch.load(fixtures_dir / "panda_ref_small.pt", weights_only=True)


def _point(d):
    i = d["inputs_single"]
    return Point(coord=i["coord"], grid_coord=i["grid_coord"], feat=i["feat"], offset=i["offset"])


def test_save_load_roundtrip_official_keys(fixtures_dir, tmp_path):
    d = _fixture(fixtures_dir)
    pth = tmp_path / "small.pth"
    torch.save({"config": d["config"], "state_dict": d["state_dict"]}, pth)
    model = load_model(pth)
    assert model.config["task"] == "backbone"
    out = save_model(model, tmp_path / "w")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "backbone" and cfg["backbone"]["enc_channels"] == [8, 16, 16, 32, 32]
    from safetensors.torch import load_file

    assert set(load_file(str(out / "model.safetensors"))) == set(d["state_dict"])  # official names, no prefix
    again = load_model(out)
    again2 = load_model(out / "model.safetensors")
    with torch.no_grad():
        ref = d["outputs_single"]["upcast_feat"]
        torch.testing.assert_close(again(_point(d)).feat, ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(again2(_point(d)).feat, ref, atol=1e-4, rtol=0)


def test_strict_keys_listed(fixtures_dir, tmp_path):
    d = _fixture(fixtures_dir)
    sd = dict(d["state_dict"])
    sd.pop("enc.enc2.block0.attn.qkv.weight")
    sd["enc.enc9.extra"] = torch.zeros(1)
    pth = tmp_path / "bad.pth"
    torch.save({"config": d["config"], "state_dict": sd}, pth)
    with pytest.raises(UserError) as e:
        load_model(pth)
    msg = str(e.value)
    assert "missing keys: enc.enc2.block0.attn.qkv.weight" in msg and "unexpected keys: enc.enc9.extra" in msg


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_payload_refused_not_executed(tmp_path):
    target = tmp_path / "pwned.txt"
    pth = tmp_path / "evil.pth"
    torch.save({"config": {}, "state_dict": {}, "x": _Evil(str(target))}, pth)
    assert not target.exists()
    with pytest.raises(UserError, match="refusing to load"):
        load_model(pth)
    assert not target.exists()


def test_missing_and_invalid(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(UserError, match="model.safetensors and config.json"):
        load_model(tmp_path / "d")
    torch.save({"a": 1}, tmp_path / "x.pth")
    with pytest.raises(UserError, match="not an official Panda checkpoint"):
        load_model(tmp_path / "x.pth")


def test_build_presets_and_param_count():
    from larpanda.config import load_config
    from larpanda.nn.ptv3 import PointTransformerV3

    with torch.device("meta"):  # structure only: random init of 90M parameters takes ~20 s on 2 cores
        m = PointTransformerV3(**load_config("panda-base", "model"))
    assert sum(p.numel() for p in m.parameters()) == 90_758_832  # spec-model §1.12, with mask token
    assert len(m.state_dict()) == 441
    assert m.out_channels == 1232
    tiny = build_model("tiny")
    assert tiny.config["task"] == "backbone"
    assert build_model({"task": "backbone", "backbone": tiny.config["backbone"]}).out_channels == tiny.out_channels
    with pytest.raises(UserError):
        build_model({"enc_depths": [1, 1], "bogus": 3})
