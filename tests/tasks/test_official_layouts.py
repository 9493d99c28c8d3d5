"""Official checkpoint layouts and settings against the official Panda code's recorded outputs.

``tests/fixtures/panda_ref_layouts.pt`` holds tiny official-layout checkpoints (``{"config", "state_dict"}``
as the official code writes them, weights random but made decisive) and what the official code (Panda
@6c39485 on a CPU: an exact torch SubMConv3d for spconv, no flash attention, serialization orders not
shuffled) computed for them on the real PILArNet-M fixture event, per raw row of
``conftest.fixture_pilarnet_event``. The checkpoints were loaded by the official loader
(``panda.model.load(path, custom_cls=Detector|Segmenter)``); the fixture's ``generator`` entry holds the
scripts that wrote it and its ``notes`` entry the details.

Layouts: a particle Detector whose backbone keeps the SSL mask token, whose config omits ``qkv_bias``
(official default False) and stores its own post-processing settings (``min_points`` 20,
``fill_uncovered``, ``nms_sigma`` 4, ``conf_threshold`` 0.4); an interaction Detector with only the required
keys (32 queries, depth 3, Linear heads, no stuff classes) plus decoder ``layer_scale`` and ``qk_scale`` and a
backbone without layer scale; a Segmenter on the encoder with ``mlp_head=True``, ``layer_scale=None`` and the
mask token; a Segmenter with the PTv3 decoder, ``layer_scale=None`` and the mask token.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import larpanda as lp
from larpanda.cli import main
from larpanda.data.point import collate
from larpanda.data.transforms import prepare
from larpanda.errors import UserError
from larpanda.io import save_model


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return torch.load(fixtures_dir / "panda_ref_layouts.pt", weights_only=True)


@pytest.fixture(scope="module")
def pths(ref, tmp_path_factory):
    """Each case as an official ``.pth`` file."""
    d = tmp_path_factory.mktemp("official")
    out = {}
    for name, case in ref["cases"].items():
        out[name] = d / f"panda_{name}.pth"
        torch.save({"config": case["config"], "state_dict": case["state_dict"]}, out[name])
    return out


@pytest.fixture(scope="module")
def event_h5(fixture_pilarnet_event, tmp_path_factory):
    from larpanda.data.pilarnet import write_events

    path = tmp_path_factory.mktemp("data") / "event.h5"
    write_events(path, [fixture_pilarnet_event])
    return path


def _batch(event):
    d = prepare(event)
    return d, collate([d])


def _raw(d, rows, n, fill=0):
    """Per-row outputs of the model's input rows put back in raw row order."""
    rows = np.asarray(rows)
    out = np.full((n,) + rows.shape[1:], fill, rows.dtype)
    out[d["index"]] = rows
    return out


def assert_logits_match(got, want):
    """The parity rule: |got − want| ≤ max(1e-4, 1e-5·max|want|), applied separately to the LED rows of a
    Detector (logits about −1e4) and the others; identical argmax."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    led = np.abs(want).max(1) > 1e3
    for rows in (led, ~led):
        if rows.any():
            tol = max(1e-4, 1e-5 * np.abs(want[rows]).max())
            assert np.abs(got[rows] - want[rows]).max() <= tol, (np.abs(got[rows] - want[rows]).max(), tol)
    assert (got.argmax(1) == want.argmax(1)).all()


CASES = ("detector_particle", "detector_interaction", "segmenter_linear_mlp", "segmenter_decoder")


@pytest.mark.parametrize("name", CASES)
def test_layout_loads_and_gives_the_official_logits(ref, pths, fixture_pilarnet_event, tmp_path, name, one_thread):
    """``lp.load_model`` accepts the layout with strict keys, ``model(batch)`` gives the official logits
    (``seg_logits`` of the Segmenter and of the Detector), and the model saved as a larpanda weights
    directory loads back to the same layout and outputs (``larpanda convert``)."""
    case = ref["cases"][name]
    ev = fixture_pilarnet_event
    model = lp.load_model(pths[name])
    assert model.config["task"] == ("panoptic" if case["kind"] == "Detector" else "semantic")
    assert set(model.state_dict()) == set(case["state_dict"])
    d, batch = _batch(ev)
    with torch.no_grad():
        out = model(batch)
    logits = out["seg_logits"] if case["kind"] == "Detector" else out
    assert_logits_match(_raw(d, logits.numpy(), len(ev)), case["seg_logits"].numpy())
    if case["kind"] == "Detector":
        stuff = torch.sigmoid(out["stuff_logits"]).numpy()
        np.testing.assert_allclose(_raw(d, stuff, len(ev)), case["stuff_probs"].numpy(), atol=1e-5, rtol=0)
        z, c = out["layers"][-1]
        torch.testing.assert_close(c[0].float(), case["pred_logits"], atol=1e-4, rtol=1e-5)
    again = lp.load_model(save_model(model, tmp_path / "w"))
    with torch.no_grad():
        out2 = again(batch)
    torch.testing.assert_close(out2["seg_logits"] if case["kind"] == "Detector" else out2, logits, atol=0, rtol=0)


@pytest.mark.parametrize("name", ("detector_particle", "detector_interaction"))
def test_detector_postprocessing_settings_give_the_official_instances(ref, pths, fixture_pilarnet_event, name,
                                                                      one_thread):
    """The checkpoint's own post-processing settings and each override give the official instance ids
    (hence partitions), classes and confidences: ``fill_uncovered`` (numbering from 0 when no mask survives
    the NMS filter), ``min_points``, ``nms_sigma``, the linear kernel, ``nms_pre``/``nms_max``, thresholds."""
    case = ref["cases"][name]
    ev = fixture_pilarnet_event
    model = lp.load_model(pths[name])
    stored = {k: v for k, v in case["config"].items() if k in model.post_cfg}
    assert {k: model.post_cfg[k] for k in stored} == stored  # nothing in the checkpoint config is ignored
    d, batch = _batch(ev)
    for entry in case["post"]:
        r = model.infer(batch, **entry["overrides"])[0]
        inst, cls = _raw(d, r["instance"], len(ev), -1), _raw(d, r["cls"], len(ev), -1)
        np.testing.assert_array_equal(inst, entry["instance"].numpy(), err_msg=str(entry["overrides"]))
        np.testing.assert_array_equal(cls, entry["cls"].numpy(), err_msg=str(entry["overrides"]))
        np.testing.assert_allclose(_raw(d, r["score"], len(ev)), entry["score"].numpy(), atol=1e-5, rtol=0)
    n_inst = [len(set(e["instance"].tolist()) - {-1}) for e in case["post"]]
    assert len(set(n_inst)) > 2  # the settings matter on this event


def test_predict_uses_the_checkpoint_settings_and_overrides(ref, pths, fixture_pilarnet_event, one_thread):
    """``model.predict(event)`` per raw row: the stored settings by default, `set_postprocess` overrides."""
    case = ref["cases"]["detector_particle"]
    model = lp.load_model(pths["detector_particle"])
    p = model.predict(fixture_pilarnet_event, logits=True)
    own, defaults = case["post"][0], case["post"][1]
    np.testing.assert_array_equal(p["instance"], own["instance"].numpy())
    np.testing.assert_array_equal(p["pid"], own["cls"].numpy())
    assert_logits_match(p["seg_logits"], case["seg_logits"].numpy())
    model.set_postprocess(**defaults["overrides"])
    p = model.predict(fixture_pilarnet_event)
    np.testing.assert_array_equal(p["instance"], defaults["instance"].numpy())
    assert len(set(p["instance"].tolist()) - {-1}) != len(set(own["instance"].tolist()) - {-1})


def test_predict_cli_save_logits_and_post(ref, pths, event_h5, tmp_path):
    """``larpanda predict --save-logits --post KEY=VALUE``: the HDF5 holds the official instances, classes
    and per-point logits; semantic weights write ``semantic_logits`` and refuse ``--post``."""
    import h5py

    case = ref["cases"]["detector_particle"]
    entry = case["post"][4]  # nms_max=1, fill_uncovered=False
    argv = ["predict", "--weights", str(pths["detector_particle"]), "--data", str(event_h5), "--quiet", "--save-logits"]
    for k, v in entry["overrides"].items():
        argv += ["--post", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
    assert main(argv + ["--out", str(tmp_path / "p.h5")]) == 0
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["instance"][0], entry["instance"].numpy())
        np.testing.assert_array_equal(f["pid"][0], entry["cls"].numpy())
        assert f["seg_logits"].attrs["columns"] == 6
        assert_logits_match(f["seg_logits"][0].reshape(-1, 6), case["seg_logits"].numpy())
        post = json.loads(f.attrs["postprocess"])
    assert post["nms_max"] == 1 and post["fill_uncovered"] is False and post["min_points"] == 20  # stored setting kept

    sem = ref["cases"]["segmenter_linear_mlp"]
    out = tmp_path / "s.h5"
    assert main(["predict", "--weights", str(pths["segmenter_linear_mlp"]), "--data", str(event_h5), "--out", str(out),
                 "--quiet", "--save-logits"]) == 0
    with h5py.File(out, "r") as f:
        got = f["semantic_logits"][0].reshape(-1, 5)
        np.testing.assert_array_equal(f["semantic"][0], sem["seg_logits"].numpy().argmax(1))
    assert_logits_match(got, sem["seg_logits"].numpy())
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--weights", str(pths["segmenter_linear_mlp"]), "--data", str(event_h5), "--out",
              str(tmp_path / "x.h5"), "--quiet", "--post", "min_points=3"])
    assert exc.value.code == 2


def test_evaluate_cli_post_overrides(pths, event_h5, tmp_path, capsys):
    """``larpanda evaluate --post``: the settings used are reported in the metrics; bad keys and values are
    one clear error."""
    base = ["evaluate", "--weights", str(pths["detector_particle"]), "--data", str(event_h5), "--min-points", "100",
            "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a.json")]) == 0
    assert main(base + ["--out", str(tmp_path / "b.json"), "--post", "fill_uncovered=false", "--post",
                        "nms_kernel=linear"]) == 0
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert a["postprocess"]["fill_uncovered"] is True and a["postprocess"]["min_points"] == 20
    assert b["postprocess"]["fill_uncovered"] is False and b["postprocess"]["nms_kernel"] == "linear"
    for bad, msg in (("min_pts=3", "unknown post-processing setting 'min_pts'"), ("nms_kernel=box", "bad value"),
                     ("min_points", "KEY=VALUE")):
        with pytest.raises(SystemExit) as exc:
            main(base + ["--post", bad])
        assert exc.value.code == 2 and msg in capsys.readouterr().err


def test_unsupported_official_settings_are_refused(ref, tmp_path):
    """Official settings larpanda does not implement are refused by name, never silently ignored."""
    case = ref["cases"]["detector_interaction"]
    for change, msg in (({"pre_norm": False}, "pre_norm"), ({"query_type": "superpoint"}, "query_type"),
                        ({"use_stuff_head": False}, "use_stuff_head"), ({"num_classes": 3}, "num_classes"),
                        ({"full_in_channels": 65}, "full_in_channels"),
                        ({"backbone": {**case["config"]["backbone"], "enc_mode": False}}, "enc_mode"),
                        ({"nms_kernel": "box"}, "nms_kernel")):
        torch.save({"config": {**case["config"], **change}, "state_dict": case["state_dict"]}, tmp_path / "x.pth")
        with pytest.raises(UserError, match=msg):
            lp.load_model(tmp_path / "x.pth")
    seg = ref["cases"]["segmenter_linear_mlp"]
    torch.save({"config": {**seg["config"], "backbone_out_channels": 63}, "state_dict": seg["state_dict"]},
               tmp_path / "s.pth")
    with pytest.raises(UserError, match="backbone_out_channels"):
        lp.load_model(tmp_path / "s.pth")


def test_fixture_inputs_are_larpandas(ref, fixture_pilarnet_event):
    """The official transform's model inputs recorded in the fixture are larpanda's `prepare` (same rows)."""
    d = prepare(fixture_pilarnet_event)
    inp = ref["inputs"]
    np.testing.assert_array_equal(d["index"], ref["raw_index"].numpy())
    np.testing.assert_array_equal(d["grid_coord"], inp["grid_coord"].numpy())
    np.testing.assert_allclose(d["feat"], inp["feat"].numpy(), atol=1e-6, rtol=0)
