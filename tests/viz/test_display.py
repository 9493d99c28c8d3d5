"""Event display and the simulator statistics report."""

import numpy as np
import pytest

from larpanda.data.event import SEMANTIC_CLASSES
from larpanda.sim import generate_events
from larpanda.viz.display import event_figure, stats_report


@pytest.fixture(scope="module")
def events():
    return generate_events(3, seed=7)


def test_event_figure_one_trace_per_class_with_names(events):
    ev = events[0]
    fig = event_figure(ev, "semantic", title="t")
    names = [t.name for t in fig.data]
    present = sorted(set(ev.segment_motif.tolist()))
    assert names == [SEMANTIC_CLASSES[c] for c in present]
    assert sum(len(t.x) for t in fig.data) == len(ev)
    assert fig.layout.scene.aspectmode == "data"
    part = event_figure(ev, "particle")
    assert len(part.data) == ev.num_particles + int((ev.instance_particle < 0).any())
    inter = event_figure(ev, "interaction", energy_threshold=0.13)
    assert sum(len(t.x) for t in inter.data) == int((ev.energy > 0.13).sum())
    assert len(event_figure(ev, "energy").data) == 1


def test_event_figure_from_arrays_with_unpredicted_rows(events):
    ev = events[1]
    pred = ev.segment_motif.copy()
    pred[ev.energy <= 0.13] = -1
    fig = event_figure({"voxel": ev.voxel, "energy": ev.energy, "segment_motif": pred}, "semantic")
    assert "not predicted" in [t.name for t in fig.data]
    with pytest.raises(ValueError):
        event_figure(ev, "colour")


def test_stats_report_is_self_contained(events, tmp_path):
    out = stats_report(events, tmp_path / "r.html", n_display=1)
    text = out.read_text()
    assert "<script" in text and "src=\"https://cdn.plot.ly" not in text and len(text) > 3_000_000  # plotly.js inlined
    assert text.count("Plotly.newPlot") >= 3 + 4  # 3 displays + 4 histograms
    assert "frac_michel" in text
