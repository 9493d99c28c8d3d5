"""End to end: `larpanda train panoptic` → `evaluate --task panoptic` → `predict` on a one-event file."""

import json

import h5py
import pytest

from larpanda.cli import main


def test_train_evaluate_predict(tmp_path, fixture_pilarnet_event, capsys):
    from larpanda.data.pilarnet import write_events

    ev = fixture_pilarnet_event
    data = tmp_path / "one.h5"
    write_events(data, [ev])
    run = tmp_path / "run"
    sets = ["model.preset=tiny", "train.max_steps=2", "train.batch_size=1", "decoder.hidden_channels=32",
            "decoder.num_heads=4", "data.augment=null", "train.progress=false"]
    argv = ["train", "panoptic", "--mode", "scratch", "--level", "particle", "--data", str(data), "--val-data", str(data),
            "--out", str(run), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    cfg = json.loads((run / "weights" / "config.json").read_text())
    assert cfg["task"] == "panoptic" and cfg["level"] == "particle" and cfg["decoder"]["hidden_channels"] == 32
    val = json.loads((run / "val_metrics.json").read_text())
    assert 0.0 <= val["f1"] <= 1.0 and val["num_events"] == 1.0 and "pid_confusion" in val
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 2

    out = tmp_path / "m.json"
    assert main(["evaluate", "--weights", str(run), "--data", str(data), "--task", "panoptic", "--out", str(out),
                 "--quiet"]) == 0
    m = json.loads(out.read_text())
    assert {"f1", "ari", "pq", "pq_std", "matched_iou", "postprocess_s_per_event"} <= set(m)
    assert m["f1"] == val["f1"]  # same weights, same data, deterministic eval

    # the task comes from the weights' config; --min-points, --exclude-led and --report are honoured
    big = len(ev) + 1
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--weights", str(run), "--data", str(data), "--min-points", str(big), "--quiet"])
    assert exc.value.code == 2 and f"min {big} raw points" in capsys.readouterr().err
    out2 = tmp_path / "m2.json"
    assert main(["evaluate", "--weights", str(run), "--data", str(data), "--min-points", "100", "--exclude-led",
                 "--out", str(out2), "--report", str(tmp_path / "rep"), "--quiet"]) == 0
    m2 = json.loads(out2.read_text())
    assert m2["exclude_led"] is True and m2["num_events"] == 1.0
    n_led = int(((ev.segment_motif == 4) & (ev.energy > 0.13)).sum())
    assert n_led > 0 and m2["num_points"] == m["num_points"] - n_led  # true LED points left out of the scores
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Particles and interactions" in page

    pred = tmp_path / "pred.h5"
    assert main(["predict", "--weights", str(run), "--data", str(data), "--out", str(pred), "--quiet"]) == 0
    with h5py.File(pred, "r") as f:
        assert {"instance", "pid", "score"} <= set(f)
        assert f["instance"][0].shape == (len(ev),)


def test_decoder_mode_cpu_preset_caches_frozen_features(tmp_path, fixture_pilarnet_event, monkeypatch, capsys, caplog):
    """``--config cpu`` (data.cache_features, no augmentation): the frozen backbone runs once per training
    event, not once per step, unless the cache would not fit in memory; with augmentation it is refused."""
    import pytest
    import torch

    from larpanda import io
    from larpanda.data.pilarnet import write_events
    from larpanda.tasks.panoptic import PanopticModel

    data = tmp_path / "one.h5"
    write_events(data, [fixture_pilarnet_event])
    torch.manual_seed(0)
    io.save_model(io.build_model("tiny"), tmp_path / "bb")
    calls = []
    orig = PanopticModel.features

    def counting(self, point):
        calls.append(self.training)
        return orig(self, point)

    monkeypatch.setattr(PanopticModel, "features", counting)
    argv = ["train", "panoptic", "--mode", "decoder", "--level", "particle", "--config", "cpu", "--weights",
            str(tmp_path / "bb"), "--data", str(data), "--quiet", "--set", "train.max_steps=3",
            "--set", "train.batch_size=1", "--set", "decoder.hidden_channels=32", "--set", "decoder.num_heads=4"]
    assert main(argv + ["--out", str(tmp_path / "run")]) == 0
    assert calls.count(True) == 1  # 3 steps over the same event: one backbone pass
    # a cache that would not fit in memory: a warning, and the backbone runs at every step instead
    need = len(fixture_pilarnet_event.point) * sum(io.build_model("tiny").kwargs["enc_channels"]) * 2
    monkeypatch.setattr("larpanda.io.memory.available_bytes", lambda device="cpu": need)  # 0.8 x this < need
    calls.clear()
    with caplog.at_level("WARNING", logger="larpanda.train"):
        assert main(argv + ["--out", str(tmp_path / "run_nomem")]) == 0
    assert calls.count(True) == 3 and "training without it" in caplog.text
    monkeypatch.setattr("larpanda.io.memory.available_bytes", lambda device="cpu": int(need / 0.8) + 1)
    calls.clear()
    assert main(argv + ["--out", str(tmp_path / "run_fits")]) == 0
    assert calls.count(True) == 1
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--out", str(tmp_path / "run2"), "--set", "data.augment={flip: {axes: [0], p: 0.5}}"])
    assert exc.value.code == 2 and "cache_features" in capsys.readouterr().err


@pytest.mark.parametrize("level", ["particle", "interaction"])
def test_graph_head_train_evaluate_predict(tmp_path, fixture_pilarnet_event, level, capsys):
    """``--head graph``: its preset (configs/panoptic/graph.yaml) trains, the weights carry the head, and
    evaluate / predict rebuild it from the weights alone."""
    from larpanda.data.pilarnet import write_events

    data = tmp_path / "one.h5"
    write_events(data, [fixture_pilarnet_event])
    run = tmp_path / "run"
    argv = ["train", "panoptic", "--head", "graph", "--mode", "scratch", "--level", level, "--data", str(data),
            "--val-data", str(data), "--out", str(run), "--quiet", "--set", "model.preset=tiny", "--set",
            "train.min_steps=3", "--set", "train.max_steps=3", "--set", "train.eval_every=2", "--set", "graph.hidden=16"]
    assert main(argv) == 0
    cfg = json.loads((run / "weights" / "config.json").read_text())
    assert cfg["head"] == "graph" and cfg["graph"]["hidden"] == 16 and cfg["level"] == level
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["head"] == "graph" and summary["fit"]["step"] == 3
    out = tmp_path / "m.json"
    # min_points 1: a 3-step head may leave only clusters under the default 3 points, and the ARI skips stuff
    assert main(["evaluate", "--weights", str(run), "--data", str(data), "--out", str(out), "--quiet",
                 "--post", "min_points=1"]) == 0
    m = json.loads(out.read_text())
    assert m["level"] == level and 0.0 <= m["ari"] <= 1.0 and m["num_events"] == 1.0
    assert m["postprocess"] == {"edge_threshold": 0.5, "fragment_threshold": 0.5, "interaction_threshold": 0.5,
                                "min_points": 1, "linkage": "average", "inference_knn": 16,
                                "stuff_threshold": 0.3 if level == "interaction" else 0.2, "led_fragment_threshold": 0.5}
    # the graph head's thresholds are its --post settings; the mask head's are refused for it
    assert main(["evaluate", "--weights", str(run), "--data", str(data), "--out", str(out), "--quiet",
                 "--post", "edge_threshold=0.2"]) == 0
    assert json.loads(out.read_text())["postprocess"]["edge_threshold"] == 0.2
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--weights", str(run), "--data", str(data), "--quiet", "--post", "conf_threshold=0.3"])
    assert exc.value.code == 2 and "conf_threshold" in capsys.readouterr().err
    pred = tmp_path / "pred.h5"
    assert main(["predict", "--weights", str(run), "--data", str(data), "--out", str(pred), "--quiet"]) == 0
    with h5py.File(pred, "r") as f:
        assert f["instance"][0].shape == (len(fixture_pilarnet_event),)


def test_cpu_long_budget_is_the_graph_recipe(tmp_path, fixture_pilarnet_event):
    """``--config cpu-long`` (the hour-on-2-cores budget of every task) trains the graph head with the graph
    recipe's schedule, without ``--head``; ``--head mask`` still overrides the preset's head."""
    from larpanda.data.pilarnet import write_events
    from larpanda.tasks.common import load_task_config

    long, graph = (load_task_config("panoptic", name, default="particle") for name in ("cpu-long", "graph"))
    assert long == graph and long["head"] == "graph" and long["train"]["max_steps"] == 4000
    data = tmp_path / "one.h5"
    write_events(data, [fixture_pilarnet_event])
    common = ["--mode", "scratch", "--level", "particle", "--data", str(data), "--quiet", "--config", "cpu-long",
              "--set", "model.preset=tiny", "--set", "train.min_steps=2", "--set", "train.max_steps=2",
              "--set", "train.eval_every=2", "--set", "graph.hidden=16"]
    for head, run in ((None, tmp_path / "g"), ("mask", tmp_path / "m")):
        assert main(["train", "panoptic", "--out", str(run)] + (["--head", head] if head else []) + common) == 0
        summary = json.loads((run / "summary.json").read_text())
        assert summary["run"]["head"] == (head or "graph") and summary["fit"]["step"] == 2
