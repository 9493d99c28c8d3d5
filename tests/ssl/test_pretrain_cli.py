"""`larpanda pretrain` end to end on a micro config: run, export, load; refusals exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from larpanda.cli import main
from larpanda.config import load_config

sys.path.insert(0, str(Path(__file__).parent))
from test_ssl import MICRO, SSL  # noqa: E402


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    from larpanda.data.pilarnet import write_events
    from larpanda.sim.generate import generate_events

    path = tmp_path_factory.mktemp("sim") / "sim.h5"
    write_events(path, generate_events(4, seed=21))
    return path


def test_presets_have_spec_numbers():
    base = load_config("panda-base", "pretrain")
    assert base["train"]["batch_size"] == 12 and base["train"]["lr"] == 0.0026 and base["train"]["layer_decay"] == 0.9
    assert base["train"]["weight_decay"] == 0.04 and base["train"]["weight_decay_end"] == 0.2 and base["train"]["grad_clip"] == 3.0
    assert base["ssl"]["num_prototypes"] == 4096 and base["views"]["max_size"] == 30000
    assert base["model_overrides"]["drop_path"] == 0.3
    small = load_config("cpu-small", "pretrain")
    assert small["model"] == "tiny" and small["ssl"]["mask_loss_weight"] == 0.25
    long = load_config("cpu-long", "pretrain")  # the cpu-small recipe, ten times the steps
    assert long["train"]["max_steps"] == 10 * small["train"]["max_steps"]
    assert {k: v for k, v in long.items() if k != "train"} == {k: v for k, v in small.items() if k != "train"}


def _micro_config(tmp_path) -> tuple[dict, Path]:
    cfg = load_config("cpu-small", "pretrain")
    cfg.pop("model_overrides")
    cfg["model"] = MICRO
    cfg["ssl"].update(SSL)
    cfg["views"]["max_size"] = 150
    cfg["data"]["min_points"] = 256
    cfg["train"].update(max_steps=2, log_every=1, progress=False)
    cpath = tmp_path / "micro.yaml"
    cpath.write_text(yaml.safe_dump(cfg))
    return cfg, cpath


def test_pretrain_cli_runs_exports_and_refuses(tmp_path, sim_file, capsys):
    cfg, cpath = _micro_config(tmp_path)
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(cpath), "--data", str(sim_file), "--out", str(run), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 2 and summary["nonfinite"] == 0
    from larpanda.io import load_model

    m = load_model(run / "backbone")
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    # RUN/backbone is the STUDENT backbone (the reference's downstream loaders take module.student, §2.6)
    student = {k[len("student.backbone."):]: v for k, v in ck["model"].items() if k.startswith("student.backbone.")}
    for k, v in m.state_dict().items():
        assert torch.equal(v, student[k]), k
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["max_steps"] == 2
    # a second run into the same folder without --resume is refused (exit 2, one line)
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--config", str(cpath), "--data", str(sim_file), "--out", str(run)])
    assert e.value.code == 2
    assert "--resume" in capsys.readouterr().err
    # an unknown ssl option is a user error
    cfg["ssl"]["bogus"] = 1
    cpath.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--config", str(cpath), "--data", str(sim_file), "--out", str(tmp_path / "r2")])
    assert e.value.code == 2 and "bogus" in capsys.readouterr().err


def test_pretrain_reruns_are_identical(tmp_path, sim_file):
    """The seed fixes the initialisation too: torch starts each process from a random seed (here
    `torch.seed()`), and a model built before the RNGs were seeded differed in every run."""
    from larpanda.io import load_model

    _, cpath = _micro_config(tmp_path)
    backbones = []
    for name in ("a", "b"):
        torch.seed()
        assert main(["pretrain", "--config", str(cpath), "--data", str(sim_file), "--out", str(tmp_path / name),
                     "--quiet", "--deterministic"]) == 0
        backbones.append(load_model(tmp_path / name / "backbone").state_dict())
    assert all(torch.equal(v, backbones[1][k]) for k, v in backbones[0].items())
