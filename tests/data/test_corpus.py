"""Every case of the bad-input corpus has its documented behaviour, through the API, the
Dataset (with and without skip_bad_events) and `larpanda info` (exit 2, one line, no traceback)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import corpus
from larpanda.cli import main
from larpanda.data import PILArNetDataset, pilarnet
from larpanda.errors import DataError

ALL_BAD = ("v1_cluster_with_extra", "v2_without_extra")  # version mismatch: every event fails


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return {c.name: c for c in corpus.make_corpus(tmp_path_factory.mktemp("corpus"))}


def test_corpus_is_big_enough(cases):
    assert len(cases) >= 20
    assert sum(c.behaviour == "error" for c in cases.values()) >= 20


def _names(behaviour):
    # names are fixed in corpus.make_corpus; build the list without writing files
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return [c.name for c in corpus.make_corpus(d) if c.behaviour == behaviour]


ERROR_NAMES = _names("error")
OK_NAMES = _names("ok")


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_error_cases_api_and_cli(cases, name, capsys):
    c = cases[name]
    with pytest.raises(DataError) as ei:
        if name == "points_npy_wrong_length":
            pilarnet.read_points_index(c.path)
        else:
            pilarnet.read_events(c.path)
    err = ei.value
    assert isinstance(err, ValueError)
    assert err.event == c.event, str(err)
    if c.field is not None:
        assert err.field == c.field, str(err)
    assert c.path.name.removesuffix(".h5") in str(err)
    with pytest.raises(SystemExit) as se:
        main(["info", str(c.path)])
    assert se.value.code == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("larpanda: error: ")
    assert str(c.path).removesuffix(".h5") in lines[0] and "Traceback" not in out.err
    if c.event is not None:
        assert f" event {c.event}: " in lines[0]
    # Dataset: raises without skip; with skip, event-level errors are counted, file-level ones drop the file
    with pytest.raises(DataError):
        ds = PILArNetDataset(c.path, min_points=0)
        [ds[i] for i in range(len(ds))]
    if name in ALL_BAD:  # every event of the file is bad: skipping leaves nothing to load
        ds = PILArNetDataset(c.path, min_points=0, skip_bad_events=True)
        with pytest.raises(DataError, match="no event qualifies"):
            ds[0]
        assert len(ds.skipped) == corpus.N_EVENTS
        assert main(["info", str(c.path), "--skip-bad-events", "--json"]) == 0
        assert f'"skipped_events": {corpus.N_EVENTS}' in capsys.readouterr().out
    elif c.event is not None:
        ds = PILArNetDataset(c.path, min_points=0, skip_bad_events=True)
        items = [ds[i] for i in range(len(ds))]
        assert len(ds.skipped) >= 1 and f"event {c.event}" in ds.skipped[0]
        assert all(int(it["event_index"][0]) != c.event for it in items)
        # CLI with --skip-bad-events: exit 0 and the count is reported
        assert main(["info", str(c.path), "--skip-bad-events", "--json"]) == 0
        assert '"skipped_events": 1' in capsys.readouterr().out
    elif name == "missing_file":  # a path the user typed that does not exist is never skipped
        with pytest.raises(DataError, match="no such file"):
            PILArNetDataset([c.path, cases["v1_valid"].path], min_points=0, skip_bad_events=True)
    else:
        ds = PILArNetDataset([c.path, cases["v1_valid"].path], min_points=0, skip_bad_events=True)
        assert len(ds.skipped_files) == 1 and ds.files == [cases["v1_valid"].path]


@pytest.mark.parametrize("name", OK_NAMES)
def test_ok_cases_documented_handling(cases, name, capsys):
    c = cases[name]
    events = pilarnet.read_events(c.path)
    assert len(events) == corpus.N_EVENTS
    if c.invalid:
        with pytest.raises(DataError):
            pilarnet.validate(c.path)
    else:
        pilarnet.validate(c.path)
    assert main(["info", str(c.path), "--json"]) == 0
    capsys.readouterr()
    ds = PILArNetDataset(c.path)  # default min_points 1024
    items = [ds[i] for i in range(len(ds))]
    if name in ("empty_event", "one_point_event"):
        assert corpus.BAD not in ds.rows.tolist()  # never indexed
        ds0 = PILArNetDataset(c.path, min_points=0)
        item = ds0[corpus.BAD]
        want = corpus.BAD + 1 if name == "empty_event" else corpus.BAD  # empty -> next event
        assert int(item["event_index"][0]) == want
    if name == "duplicate_voxel":
        ev = events[corpus.BAD]
        item = ds[corpus.BAD]
        assert len(item["index"]) == int((ev.energy > 0.13).sum()) - 1  # one point per cell
    if name == "huge_event_200k":
        item = ds[corpus.BAD]
        assert len(item["coord"]) == 200_000 and item["grid_coord"].max() > 1000
    if name == "v1_valid":
        assert all((it["segment_pid"] == 5).all() for it in items)


def test_cli_subprocess_one_line_no_traceback(cases):
    c = cases["nan_energy"]
    r = subprocess.run([sys.executable, "-m", "larpanda", "info", str(c.path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith(f"larpanda: error: {c.path} event 1: point: non-finite energy nan")


def test_worker_error_is_one_clean_line(cases):
    import itertools

    from larpanda.data import collate
    from larpanda.train.data import batch_stream

    c = cases["nan_energy"]
    ds = PILArNetDataset(c.path, min_points=0)
    with pytest.raises(DataError) as ei:
        list(itertools.islice(batch_stream(ds, 3, 0, 0, collate, shuffle=False, num_workers=1), 2))
    msg = str(ei.value)
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.startswith(f"{c.path} event 1: point: non-finite energy")


@pytest.mark.parametrize("name", [n for n in ERROR_NAMES if n not in ALL_BAD])
def test_error_cases_batched_like_per_event(cases, name):
    """A training batch (`PILArNetDataset.get_batch`) holding a bad event raises the per-event error, or with
    skip_bad_events replaces and counts it exactly as the per-event path does."""
    c = cases[name]
    if c.event is None:
        return
    ds = PILArNetDataset(c.path, min_points=0)
    with pytest.raises(DataError) as ei:
        ds.get_batch(range(len(ds)))
    with pytest.raises(DataError) as ej:
        [ds[i] for i in range(len(ds))]
    assert str(ei.value) == str(ej.value)
    ds = PILArNetDataset(c.path, min_points=0, skip_bad_events=True)
    batch = ds.get_batch(range(len(ds)))
    ref = PILArNetDataset(c.path, min_points=0, skip_bad_events=True)
    items = [ref[i] for i in range(len(ref))]
    assert batch["event_index"].tolist() == [int(it["event_index"][0]) for it in items]
    assert int(batch["skipped"].sum()) == sum(int(it["skipped"][0]) for it in items) >= 1
