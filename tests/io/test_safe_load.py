"""Official .pth checkpoints: harmless non-tensor types load (numpy, OrderedDict, addict.Dict), code never runs."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from larpanda.errors import UserError
from larpanda.io import load_model
from larpanda.io.safe_load import safe_torch_load

# A stand-in for the real addict package (not installed here): same module path addict.addict.Dict; with
# real_like, the real class's pickling (state = the dict itself, restored by __setstate__).
REAL_LIKE = """
    def __init__(__self, *args, **kwargs):
        object.__setattr__(__self, "__parent", None)
        dict.__init__(__self, *args, **kwargs)

    def __getstate__(self):
        return self

    def __setstate__(self, state):
        self.update(state)
"""


def _save_with_fake_addict(tmp_path, path, build, real_like: bool):
    """Write ``build(addict.Dict)`` with torch.save while a fake ``addict`` package is importable, then
    remove it again (from sys.path and sys.modules) so that loading cannot import it."""
    pkg = tmp_path / "fake_site" / "addict"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .addict import Dict\n")
    (pkg / "addict.py").write_text("class Dict(dict):\n" + (REAL_LIKE if real_like else "    pass\n"))
    sys.path.insert(0, str(pkg.parent))
    try:
        import addict

        torch.save(build(addict.Dict), path)
    finally:
        sys.path.remove(str(pkg.parent))
        for name in ("addict", "addict.addict"):
            sys.modules.pop(name, None)
    with pytest.raises(ImportError):
        __import__("addict")


@pytest.mark.parametrize("real_like", [False, True])
def test_numpy_ordereddict_addict_load_with_values(tmp_path, real_like):
    path = tmp_path / "c.pth"

    def build(Dict):
        cfg = Dict(num_classes=6, backbone=Dict(enc_channels=[8, 16], type="PT-v3m2"), lr=0.002)
        return {
            "config": cfg,
            "epoch": np.int64(7),
            "best": np.float64(0.625),
            "flag": np.bool_(True),
            "f32": np.float32(1.5),
            "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
            "iarr": np.array([3, -1], dtype=np.int64),
            "dtype": np.dtype("float64"),
            "od": OrderedDict(a=torch.ones(2), b=1),
            "state_dict": {"w": torch.arange(4.0)},
        }

    _save_with_fake_addict(tmp_path, path, build, real_like)
    obj = safe_torch_load(path)
    cfg = obj["config"]
    assert isinstance(cfg, dict) and dict(cfg) == {"num_classes": 6, "backbone": {"enc_channels": [8, 16],
                                                                                  "type": "PT-v3m2"}, "lr": 0.002}
    assert isinstance(cfg["backbone"], dict)
    assert obj["epoch"] == 7 and isinstance(obj["epoch"], np.int64)
    assert obj["best"] == 0.625 and isinstance(obj["best"], np.float64)
    assert isinstance(obj["flag"], np.bool_) and bool(obj["flag"]) is True
    assert obj["f32"] == np.float32(1.5) and obj["f32"].dtype == np.float32
    np.testing.assert_array_equal(obj["arr"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert obj["arr"].dtype == np.float32 and obj["iarr"].tolist() == [3, -1]
    assert obj["dtype"] == np.dtype("float64")
    assert isinstance(obj["od"], OrderedDict) and list(obj["od"]) == ["a", "b"]
    torch.testing.assert_close(obj["od"]["a"], torch.ones(2))
    torch.testing.assert_close(obj["state_dict"]["w"], torch.arange(4.0))


def test_official_checkpoint_with_addict_config_loads(tmp_path, fixtures_dir):
    """A backbone .pth whose config is an addict.Dict and with numpy extras loads through load_model."""
    d = torch.load(fixtures_dir / "panda_ref_small.pt", weights_only=True)
    path = tmp_path / "panda_base_like.pth"

    def build(Dict):
        cfg = Dict(d["config"])
        return {"config": cfg, "state_dict": d["state_dict"], "epoch": np.int64(3), "best": np.float64(0.5)}

    _save_with_fake_addict(tmp_path, path, build, real_like=True)
    model = load_model(path)
    assert model.config["task"] == "backbone"
    assert model.config["backbone"]["enc_channels"] == list(d["config"]["enc_channels"])
    torch.testing.assert_close(model.state_dict()["embedding.stem.linear.weight"],
                               d["state_dict"]["embedding.stem.linear.weight"])


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize("via,zipfile", [("safe_torch_load", True), ("load_model", True), ("load_model", False)])
def test_os_system_payload_refused_and_never_run(tmp_path, via, zipfile):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"config": {}, "state_dict": {}, "x": _System(f"touch {target}")}, path,
               _use_new_zipfile_serialization=zipfile)
    assert not target.exists()
    with pytest.raises(UserError) as e:
        (safe_torch_load if via == "safe_torch_load" else load_model)(path)
    msg = str(e.value)
    assert "refusing to load" in msg and f"the global {os.system.__module__}.system" in msg  # posix.system
    assert "\n" not in msg
    assert not target.exists()


def test_other_globals_refused_by_name(tmp_path):
    path = tmp_path / "eval.pth"
    torch.save({"x": _Eval()}, path)
    with pytest.raises(UserError, match=r"the global builtins\.eval;"):
        safe_torch_load(path)
    path = tmp_path / "cls.pth"
    torch.save({"config": {}, "state_dict": {}, "cls": _Eval}, path)  # a class of some other package
    with pytest.raises(UserError, match=rf"the global {__name__}\._Eval;"):
        load_model(path)


def test_allow_list_is_scoped_to_the_load(tmp_path):
    """The extra globals are allowed only inside safe_torch_load, not for a plain torch.load afterwards."""
    path = tmp_path / "n.pth"
    torch.save({"epoch": np.int64(1)}, path)
    assert safe_torch_load(path)["epoch"] == 1
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read as a torch checkpoint"):
        safe_torch_load(path)
