"""`larpanda simulate` command line."""

import random

import numpy as np
import pytest

from larpanda.cli import main
from larpanda.commands.simulate import plan, split_counts
from larpanda.data import pilarnet
from larpanda.sim import generate_events
from larpanda.sim.labels import Registry, assemble
from larpanda.sim.showers import Cascade


def test_split_directory_layout_and_event_identity(tmp_path):
    assert main(["simulate", "--events", "6", "--seed", "3", "--out", str(tmp_path / "d"), "--split", "4,1,1", "--quiet"]) == 0
    files = {p.parent.name: p for p in (tmp_path / "d").glob("*/*.h5")}
    assert set(files) == {"train", "val", "test"}
    assert files["train"].name == "sim_4_v2.h5"
    for p in files.values():
        pilarnet.validate(p)
        assert p.with_name(p.stem + "_points.npy").exists()
    # val holds global events 4 (train 0–3, val 4, test 5) of the seed's stream
    val = pilarnet.read_events(files["val"])[0]
    ref = generate_events(1, seed=3, start_index=4)[0]
    assert np.array_equal(val.point, ref.point) and np.array_equal(val.cluster, ref.cluster)


def test_single_file_and_events_per_file(tmp_path):
    assert main(["simulate", "--events", "3", "--seed", "0", "--out", str(tmp_path / "a.h5"), "--quiet"]) == 0
    assert pilarnet.num_events(tmp_path / "a.h5") == 3
    parts = plan(5, str(tmp_path / "b.h5"), "1,1,1", 2)
    assert [c for _, _, c in parts] == [2, 2, 1] and [o for _, o, _ in parts] == [0, 2, 4]
    assert split_counts(1000, "800,100,100") == [800, 100, 100]
    assert sum(split_counts(7, "1,1,1")) == 7


@pytest.mark.parametrize("argv", [
    ["--events", "0"], ["--events", "2", "--split", "1,2"], ["--events", "2", "--workers", "0"],
])
def test_user_errors_exit_2(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["simulate", *argv, "--out", str(tmp_path / "x.h5")])
    assert e.value.code == 2
    assert "larpanda: error:" in capsys.readouterr().err


def test_h5_inside_directory_name_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--events", "1", "--out", str(tmp_path / "x.h5" / "y")])
    assert ".h5" in capsys.readouterr().err


def test_empty_event_is_still_valid():
    rng = np.random.default_rng(0)
    reg = Registry()
    ev = assemble(rng, reg, Cascade(rng, random.Random(0), reg.shower_fragment), {"p0": [], "p1": [], "dE": [], "time": [], "frag": []}, 0.2)
    assert len(ev) == 0 and ev.cluster.tolist() == [[0, -1, -1, -1, 4, -1]]
