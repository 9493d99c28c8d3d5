"""`larpanda info`: figures on a known file, JSON output, --validate, exit 2 on bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from larpanda.cli import main
from larpanda.data import pilarnet
from larpanda.data.event import Event


@pytest.fixture(scope="module")
def fixture_file(fixtures_dir, tmp_path_factory):
    z = np.load(fixtures_dir / "pilarnet_m_test_event0_recon.npz")
    ev = pilarnet.event_from_labels(z["voxel"], z["energy"], z["segment_motif"], z["segment_pid"],
                                    z["instance_particle"], z["instance_interaction"])
    p = ev.point.copy()
    p[:100, 3] = p[:100, 4] = 0.05  # 100 points below the cut in the second event
    path = tmp_path_factory.mktemp("info") / "fx.h5"
    pilarnet.write_events(path, [ev, Event(p, ev.cluster, ev.cluster_extra)])
    return path, z


def test_info_json_figures(fixture_file, capsys):
    path, z = fixture_file
    assert main(["info", str(path), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["events"] == 2 and s["version"] == 2 and s["skipped_events"] == 0
    assert s["points_per_event_raw"]["median"] == 1175
    assert s["points_per_event_after_cut"]["min"] == 1075 and s["points_per_event_after_cut"]["max"] == 1175
    assert s["particles_per_event"]["median"] == 10 and s["interactions_per_event"]["median"] == 4
    motif = np.bincount(z["segment_motif"].astype(int), minlength=5) / len(z["segment_motif"])
    assert s["semantic_fraction_raw"]["track"] == pytest.approx(motif[1])
    assert s["semantic_fraction_raw"]["led"] == pytest.approx(motif[4])
    assert sum(s["pid_fraction_after_cut"].values()) == pytest.approx(1.0)


def test_info_table_and_validate(fixture_file, capsys):
    path, _ = fixture_file
    assert main(["info", str(path), "--validate"]) == 0
    out = capsys.readouterr().out
    assert "events                 2" in out and "median 1175" in out and "track" in out


def test_info_validate_flags_duplicate_voxel(tmp_path, fixture_file, capsys):
    path, _ = fixture_file
    ev = pilarnet.read_events(path, 0, 1)[0]
    p = ev.point.copy()
    p[1, :3] = p[0, :3]
    bad = tmp_path / "dup.h5"
    pilarnet.write_events(bad, [ev, Event(p, ev.cluster, ev.cluster_extra)])
    assert main(["info", str(bad)]) == 0  # reading is fine (GridSample keeps one point per cell)
    capsys.readouterr()
    with pytest.raises(SystemExit) as se:
        main(["info", str(bad), "--validate"])
    assert se.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"larpanda: error: {bad} event 1: point: duplicate voxel")


def test_info_plot_writes_html_or_says_why(fixture_file, tmp_path, capsys):
    path, _ = fixture_file
    out = tmp_path / "stats.html"
    try:
        rc = main(["info", str(path), "--plot", str(out)])
    except SystemExit as exc:  # viz not available in this build: one clear line
        assert exc.code == 2
        assert "--plot" in capsys.readouterr().err
        return
    assert rc == 0 and out.exists() and out.stat().st_size > 1000
