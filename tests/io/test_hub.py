"""Panda names and PILArNet-M splits through the Hugging Face Hub cache, offline (no network in tests).

The fake caches are laid out as huggingface_hub lays them out (and as `try_to_load_from_cache` /
`hf_hub_download` / `snapshot_download` read them): ``<cache>/<type>s--<owner>--<name>/refs/main`` (the
commit hash, no newline), ``blobs/<sha256>`` and ``snapshots/<commit>/<path>`` symlinks to the blobs.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import larpanda as lp
from larpanda.cli import main
from larpanda.errors import DataError, UserError
from larpanda.io import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_type: str, repo_id: str, rel: str, data: bytes, commit: str = COMMIT) -> Path:
    """Store ``data`` as file ``rel`` of ``repo_id`` at ``commit`` (= refs/main) in a Hub cache folder."""
    repo = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    link = repo / "snapshots" / commit / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hub cache, offline. huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE when imported, so
    its constants are patched as well as the environment."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def particle_checkpoint() -> tuple[bytes, dict]:
    """A small official-layout ``panda_particle.pth``: ``{"config": Detector kwargs, "state_dict"}`` with a
    tiny backbone and head (the panda-base layout is tested in tests/tasks/test_panoptic_model.py)."""
    from larpanda.config import load_config
    from larpanda.tasks.panoptic import PanopticModel, from_panda_config

    bb = load_config("tiny", "model")
    cfg = {"num_classes": 6, "full_in_channels": sum(bb["enc_channels"]), "hidden_channels": 32, "num_heads": 4,
           "num_queries": 8, "depth": 1, "mlp_point_proj": True, "qkv_bias": True, "backbone": {"type": "PT-v3m2", **bb}}
    torch.manual_seed(0)
    sd = PanopticModel(**from_panda_config(cfg)).state_dict()
    buf = io.BytesIO()
    torch.save({"config": cfg, "state_dict": sd}, buf)
    return buf.getvalue(), sd


@pytest.fixture(scope="module")
def particle_pth():
    return particle_checkpoint()


# --------------------------------------------------------------------------------------------- weights


def test_load_model_by_name_from_the_cache(hf_cache, particle_pth):
    data, sd = particle_pth
    link = put_in_cache(hf_cache, "model", "deeplearnphysics/panda", "panda_particle.pth", data)
    snapshot = hf_cache.resolve() / "models--deeplearnphysics--panda" / "snapshots" / COMMIT / "panda_particle.pth"
    assert hub.resolve_weights("particle") == snapshot  # the file name is kept (a symlink into blobs/)
    assert hub.resolve_weights("panda_particle").samefile(link)
    assert hub.resolve_weights("particle", revision=COMMIT).samefile(link)
    model = lp.load_model("particle")
    assert model.config["task"] == "panoptic" and model.level == "particle"
    got = model.state_dict()
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)


def test_existing_path_wins_and_other_names_are_refused(hf_cache, tmp_path, monkeypatch):
    local = tmp_path / "particle"
    local.write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    assert hub.resolve_weights("particle") == Path("particle")  # a file of that name here: used as is
    with pytest.raises(UserError, match=r"weights not found: no_such_thing \(no such file or directory, and not a "
                                        r"Panda name: base, semantic, particle, interaction\)"):
        hub.resolve_weights("no_such_thing")


def test_missing_offline_is_one_clear_line(hf_cache):
    with pytest.raises(UserError) as e:
        hub.resolve_weights("base")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("panda_base.pth of deeplearnphysics/panda@main is not in ")
    assert str(hf_cache) in msg and "HF_HUB_OFFLINE is set" in msg
    assert "download deeplearnphysics/panda panda_base.pth" in msg


def test_cli_weights_name_offline_missing_exits_2(hf_cache, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["predict", "--weights", "particle", "--data", str(tmp_path / "in.h5"), "--out", str(tmp_path / "o.h5")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("larpanda: error: panda_particle.pth of deeplearnphysics/panda@main")
    with pytest.raises(SystemExit) as e:  # --revision resolves before anything else runs
        main(["embed", "--weights", "base", "--revision", "v2", "--data", "x.h5", "--out", "y.h5"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("larpanda: error: panda_base.pth of deeplearnphysics/panda@v2")


def test_cli_predict_with_a_panda_name(hf_cache, tmp_path, particle_pth, fixture_pilarnet_event, capsys):
    import h5py

    put_in_cache(hf_cache, "model", "deeplearnphysics/panda", "panda_particle.pth", particle_pth[0])
    data = tmp_path / "in.h5"
    lp.data.write_events(data, [fixture_pilarnet_event])
    out = tmp_path / "pred.h5"
    assert main(["predict", "--weights", "particle", "--revision", COMMIT, "--data", str(data), "--out", str(out),
                 "--quiet"]) == 0
    with h5py.File(out) as f:
        assert len(f["instance"][0]) == len(fixture_pilarnet_event)
    conv = tmp_path / "converted"
    assert main(["convert", "particle", "--out", str(conv)]) == 0
    assert (conv / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------ data


@pytest.fixture(scope="module")
def split_files_bytes(tmp_path_factory, fixture_pilarnet_event):
    """(h5 bytes, _points.npy bytes) of a 3-event PILArNet-M v2 file."""
    d = tmp_path_factory.mktemp("events")
    path = d / "generic_v2_3_v2.h5"
    lp.data.write_events(path, [fixture_pilarnet_event] * 3)
    return path.read_bytes(), lp.data.pilarnet.points_path(path).read_bytes()


def _put_split(cache, split, files):
    h5, npy = files
    put_in_cache(cache, "dataset", hub.DATASET_REPO, f"{split}/generic_v2_3_v2.h5", h5)
    put_in_cache(cache, "dataset", hub.DATASET_REPO, f"{split}/generic_v2_3_v2_points.npy", npy)


def test_pilarnet_split_from_the_cache(hf_cache, split_files_bytes, fixture_pilarnet_event):
    _put_split(hf_cache, "test", split_files_bytes)
    ds = lp.data.PILArNet(split="test", min_points=1)
    assert isinstance(ds, lp.data.PILArNetDataset) and len(ds) == 3
    assert ds.files[0].name == "generic_v2_3_v2.h5" and COMMIT in str(ds.files[0])
    item = ds[2]
    assert item["coord"].shape[0] > 0 and int(item["event_index"][0]) == 2
    with pytest.raises(UserError) as e:
        lp.data.PILArNet(split="val")
    msg = str(e.value)
    assert "\n" not in msg and "split 'val' of deeplearnphysics/pilarnet-m@main (dataset)" in msg
    assert "larpanda data download --split val" in msg
    with pytest.raises(UserError, match="split 'dev': choose from train, val, test"):
        lp.data.PILArNet(split="dev")


def test_pilarnet_split_under_a_root(hf_cache, tmp_path, split_files_bytes):
    (tmp_path / "root" / "val").mkdir(parents=True)
    (tmp_path / "root" / "val" / "a_v2.h5").write_bytes(split_files_bytes[0])
    (tmp_path / "root" / "val" / "a_v2_points.npy").write_bytes(split_files_bytes[1])
    ds = lp.data.PILArNet(split="val", root=tmp_path / "root", min_points=1)
    assert len(ds) == 3 and ds.files == [tmp_path / "root" / "val" / "a_v2.h5"]
    (tmp_path / "root" / "test").mkdir()
    (tmp_path / "root" / "test" / "b.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"b\.h5: not an HDF5 file"):
        lp.data.PILArNet(split="test", root=tmp_path / "root")


def test_cli_data_download_offline(hf_cache, split_files_bytes, capsys):
    _put_split(hf_cache, "test", split_files_bytes)
    assert main(["data", "download", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test: 1 file(s)") and "generic_v2_3_v2.h5" in out
    with pytest.raises(SystemExit) as e:
        main(["data", "download", "--split", "all"])  # train is not in the cache
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("larpanda: error: split 'train' of deeplearnphysics/pilarnet-m")


def test_download_checks_sizes_against_the_hub(hf_cache, tmp_path, split_files_bytes, monkeypatch):
    """Online path with the Hub replaced: snapshot_download writes into --out, the listing gives sizes."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    h5, npy = split_files_bytes
    listed = {"test/generic_v2_3_v2.h5": len(h5), "test/generic_v2_3_v2_points.npy": len(npy)}
    calls = []

    class Entry:
        def __init__(self, path, size):
            self.path, self.size, self.lfs = path, size, None

    def list_repo_tree(self, repo_id, path_in_repo=None, recursive=False, repo_type=None, revision=None, **kw):
        assert (repo_id, path_in_repo, repo_type) == (hub.DATASET_REPO, "test", "dataset")
        return [Entry(p, s) for p, s in listed.items()]

    def snapshot_download(repo_id, repo_type=None, revision=None, allow_patterns=None, local_dir=None, **kw):
        calls.append((repo_id, repo_type, revision, allow_patterns, local_dir))
        (Path(local_dir) / "test").mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "test" / "generic_v2_3_v2.h5").write_bytes(h5)
        (Path(local_dir) / "test" / "generic_v2_3_v2_points.npy").write_bytes(npy)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", list_repo_tree)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    out = tmp_path / "pilarnet"
    files = hub.download_split("test", out, revision="v2")
    assert files == [out / "test" / "generic_v2_3_v2.h5"]
    assert calls == [(hub.DATASET_REPO, "dataset", "v2", ["test/*"], out)]
    ds = lp.data.PILArNet(split="test", root=out, min_points=1)  # now found under the root: no Hub call
    assert len(ds) == 3 and len(calls) == 1
    listed["test/generic_v2_3_v2.h5"] += 1
    with pytest.raises(UserError, match=rf"generic_v2_3_v2\.h5: {len(h5)} bytes but the Hub lists {len(h5) + 1}"):
        hub.download_split("test", out)


def test_check_h5_reads_expected_datasets(tmp_path):
    import h5py

    bad = tmp_path / "x.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("point", data=np.zeros(3))
    with pytest.raises(DataError, match="missing dataset"):
        hub.check_h5([bad])
