"""larpanda.atomic: atomic replacement and strict JSON (NaN/Inf written as null, never as bare NaN)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from larpanda.atomic import atomic_path, atomic_write_json, json_text


def _strict(text):
    def reject(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=reject)


def test_non_finite_floats_become_null(tmp_path):
    obj = {"ari": float("nan"), "pq": math.inf, "rows": [1.5, -math.inf, {"x": np.float32("nan")}],
           "arr": np.array([0.25, np.nan, np.inf]), "n": np.int64(7), "t": (np.float64(0.5), float("nan")),
           "path": Path("a/b")}
    atomic_write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    back = _strict(text)
    assert back == {"ari": None, "pq": None, "rows": [1.5, None, {"x": None}], "arr": [0.25, None, None], "n": 7,
                    "t": [0.5, None], "path": "a/b"}
    assert json.loads(json_text({"v": 0.1})) == {"v": 0.1}  # finite values unchanged


def test_strict_parser_rejects_bare_nan():
    """The check above is not vacuous: Python's default dumps writes NaN, which the strict parser refuses."""
    with pytest.raises(ValueError):
        _strict(json.dumps({"x": float("nan")}))


def test_unserializable_object_raises_and_keeps_old_file(tmp_path):
    p = tmp_path / "r.json"
    atomic_write_json(p, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(p, {"bad": object()})
    assert json.loads(p.read_text()) == {"ok": 1}
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


def test_atomic_path_failure_leaves_previous_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert p.read_bytes() == b"old" and not list(tmp_path.glob(".*.tmp"))
