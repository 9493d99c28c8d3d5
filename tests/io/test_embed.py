"""`model.embed(event)` on the fixture event read back from a v2 file == official up-cast output;
`larpanda convert` and `larpanda embed` end to end."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from larpanda.cli import main
from larpanda.data import pilarnet
from larpanda.io import load_model


@pytest.fixture(scope="module")
def setup(fixtures_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed")
    d = torch.load(fixtures_dir / "panda_ref_small.pt", weights_only=True)
    pth = tmp / "small.pth"
    torch.save({"config": d["config"], "state_dict": d["state_dict"]}, pth)
    z = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    ev = pilarnet.event_from_labels(z["voxel"], z["energy"], z["segment_motif"], z["segment_pid"],
                                    z["instance_particle"], z["instance_interaction"])
    h5 = tmp / "event.h5"
    pilarnet.write_events(h5, [ev, ev])
    det = torch.load(fixtures_dir / "panda_ref_small_detailed.pt", weights_only=True)
    return d, det["inputs_single"]["raw_voxel"].numpy().astype(np.int64), pth, h5, tmp


def _by_voxel(voxels, rows):
    return {tuple(v): r for v, r in zip(voxels.tolist(), rows)}


def test_embed_matches_official_upcast(setup):
    d, raw_voxel, pth, h5, _ = setup
    model = load_model(pth)
    ev = pilarnet.read_events(h5, 0, 1)[0]
    feat = model.embed(ev)
    keep = ev.energy > 0.13
    assert feat.shape == (int(keep.sum()), 104)
    ref = d["outputs_single"]["upcast_feat"].numpy()  # model rows; raw_voxel[i] = voxel of row i
    ref_by = _by_voxel(raw_voxel, ref)
    ours_by = _by_voxel(ev.voxel[keep], feat)
    assert ref_by.keys() == ours_by.keys()
    err = max(np.abs(ref_by[k] - ours_by[k]).max() for k in ref_by)
    assert err < 1e-4
    # rows follow the event's voxel order
    assert np.allclose(feat[0], ref_by[tuple(ev.voxel[keep][0].tolist())], atol=1e-4)


def test_convert_and_embed_cli(setup):
    d, raw_voxel, pth, h5, tmp = setup
    assert main(["convert", str(pth), "--out", str(tmp / "w")]) in (0, None)
    out = tmp / "emb.h5"
    assert main(["embed", "--weights", str(tmp / "w"), "--data", str(h5), "--out", str(out), "--quiet"]) in (0, None)
    ev = pilarnet.read_events(h5, 0, 1)[0]
    with h5py.File(out, "r") as f:
        assert f.attrs["channels"] == 104 and list(f["num_points"][:]) == [1175, 1175]
        a = f["feat"][1].reshape(-1, 104)
        idx = f["index"][1]
    ref_by = _by_voxel(raw_voxel, d["outputs_single"]["upcast_feat"].numpy())
    for j in (0, 500, 1174):
        assert np.abs(a[j] - ref_by[tuple(ev.voxel[idx[j]].tolist())]).max() < 1e-4
