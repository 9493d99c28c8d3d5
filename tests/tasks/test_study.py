"""End to end at tiny sizes: `larpanda study semantic` (all five rows) and train/evaluate/predict CLI."""

import json

import h5py
import numpy as np
import pytest
import torch

from larpanda.cli import main
from larpanda.config import load_config
from larpanda.data.pilarnet import num_events, write_events
from toy_events import toy_events  # noqa: E402  (tests/tasks, on sys.path)

TINY_SET = ["train.max_steps=2", "train.batch_size=2", "train.log_every=1", "train.progress=false",
            "model.preset=tiny", "data.min_points=100", "uresnet.preset=uresnet-tiny", "data.augment=null"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("toy")
    events = toy_events(7, seed=0, points=300)
    write_events(d / "toy_train.h5", events[:4])
    write_events(d / "toy_val.h5", events[4:5])
    write_events(d / "toy_test.h5", events[5:])
    # a "pretrained" tiny backbone in the weights layout (task backbone)
    from larpanda.io import build_model, save_model

    torch.manual_seed(0)
    save_model(build_model(load_config("tiny", "model")), d / "pretrained")
    return d


def test_study_end_to_end_with_uresnet_row(toy_dir, tmp_path):
    out = tmp_path / "study"
    sets = sum((["--set", s] for s in TINY_SET), [])
    rc = main(["study", "semantic", "--data", str(toy_dir), "--fractions", "0.25,1",
               "--modes", "linear,decoder,full,scratch,uresnet", "--weights", str(toy_dir / "pretrained"),
               "--out", str(out), "--quiet", *sets])
    assert rc == 0
    rows = list(__import__("csv").DictReader(open(out / "study.csv")))
    assert len(rows) == 10
    assert {r["mode"] for r in rows} == {"linear", "decoder", "full", "scratch", "uresnet"}
    by = {(r["mode"], float(r["label_fraction"])): r for r in rows}
    assert int(by[("uresnet", 0.25)]["labelled_events"]) == 1 and int(by[("uresnet", 1.0)]["labelled_events"]) == 4
    for r in rows:
        assert 0.0 <= float(r["mIoU"]) <= 1.0 and int(r["test_events"]) == 2
    md = (out / "study.md").read_text()
    assert "| uresnet |" in md and "25 % labels" in md
    html = (out / "study.html").read_text()
    assert "plotly" in html.lower() and "uresnet" in html
    assert (out / "report.html").exists() and not (out / "report_error.txt").exists()
    # every run saved loadable weights with the task config
    cfg = json.loads((out / "runs" / "linear_0.25" / "weights" / "config.json").read_text())
    assert cfg["task"] == "semantic" and cfg["mode"] == "linear"
    # the val files found under --data validate every run
    for r in rows:
        run = out / "runs" / f"{r['mode']}_{float(r['label_fraction']):g}"
        assert json.loads((run / "val_metrics.json").read_text())["num_events"] == 1


def test_train_evaluate_predict_cli(toy_dir, tmp_path):
    run = tmp_path / "run"
    sets = sum((["--set", s] for s in TINY_SET), [])
    assert main(["train", "semantic", "--model", "uresnet", "--mode", "uresnet", "--label-fraction", "0.5",
                 "--data", str(toy_dir / "toy_train.h5"), "--val-data", str(toy_dir / "toy_val.h5"),
                 "--out", str(run), "--quiet", *sets]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["labelled_events"] == 2 and "mIoU" in summary["val"]
    # the decision offsets fitted on the val split are saved with the weights
    bias = summary["calibration"]["logit_bias"]
    assert len(bias) == 5 and json.loads((run / "weights" / "config.json").read_text())["logit_bias"] == bias
    # ... and the val metrics (from the calibration pass) are those of the saved, calibrated model
    assert main(["evaluate", "--weights", str(run), "--data", str(toy_dir / "toy_val.h5"),
                 "--out", str(tmp_path / "val.json"), "--min-points", "100"]) == 0
    val = json.loads((run / "val_metrics.json").read_text())
    assert json.loads((tmp_path / "val.json").read_text())["confusion"] == val["confusion"]
    assert (run / "metrics.jsonl").exists() and (run / "checkpoints" / "last.pt").exists()
    metrics_path = tmp_path / "m.json"
    assert main(["evaluate", "--weights", str(run), "--data", str(toy_dir / "toy_test.h5"),
                 "--out", str(metrics_path), "--min-points", "100", "--report", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").exists()
    m = json.loads(metrics_path.read_text())
    assert m["num_events"] == 2 and len(m["confusion"]) == 5 and 0 <= m["mIoU"] <= 1
    pred_path = tmp_path / "pred.h5"
    src = toy_dir / "toy_test.h5"
    assert main(["predict", "--weights", str(run / "weights"), "--data", str(src), "--out", str(pred_path), "--quiet"]) == 0
    with h5py.File(pred_path) as f:
        assert f.attrs["source_file"].endswith("toy_test.h5")
        n = num_events(src)
        assert f["semantic"].shape == (n,) and list(f["event_index"][:]) == list(range(n))
        from larpanda.data.pilarnet import read_events

        ev = read_events(src, 0, 1)[0]
        assert len(f["semantic"][0]) == len(ev)
        assert len(f["semantic_probs"][0]) == 5 * len(ev) and f["semantic_probs"].attrs["columns"] == 5
    # user errors are one line, exit 2
    with pytest.raises(SystemExit) as exc:
        main(["train", "semantic", "--mode", "linear", "--data", str(src), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2


def test_semantic_row_from_metrics():
    """A grid row keeps the metrics' own names (mIoU, macro_F1, IoU_<class>, ...), as results.json does."""
    from larpanda.metrics.semantic import semantic_metrics
    from larpanda.tasks.study import COLUMNS, semantic_row

    gt = np.array([0, 0, 1, 1, 2, 3, 4, 4])
    pred = np.array([0, 1, 1, 1, 2, 3, 4, 0])
    row = semantic_row(semantic_metrics(pred, gt), "linear", 0.01, True, labelled_events=3)
    assert row["IoU_track"] == pytest.approx(2 / 3)
    assert row["IoU_michel"] == pytest.approx(1.0)
    assert row["mIoU"] == pytest.approx(np.mean([1 / 3, 2 / 3, 1, 1, 1 / 2]))
    assert row["confusion"][0] == [1, 1, 0, 0, 0]
    assert row["pretrained"] is True and row["labelled_events"] == 3
    assert set(COLUMNS) - set(row) == {"train_s", "test_events"}  # the study adds these two
